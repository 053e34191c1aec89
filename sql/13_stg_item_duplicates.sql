-- Items with more than one bronze record, per configured domain: 11_stg_items kept one of them
-- (the most complete, then the latest); behaviors reports these counts, nothing is dropped silently.
-- Grain: one row per configured domain. Key: domain.
with
configured as (
    select domain from cfg_domains
),

records as (
    select domain, item_id, count(*) as n_records
    from bronze_items
    where domain in (select configured.domain from configured)
    group by domain, item_id
)

select
    configured.domain,
    coalesce(count(records.item_id) filter (where records.n_records > 1), 0) as n_items_with_duplicates,
    coalesce(sum(records.n_records - 1) filter (where records.n_records > 1), 0)::bigint as n_records_set_aside
from configured
left join records on records.domain = configured.domain
group by configured.domain
order by configured.domain;
