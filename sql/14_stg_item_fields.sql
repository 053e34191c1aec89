-- Why a domain's items may lack text: per configured domain, its items, how many have usable text,
-- how many have no title at all, and the other fields their source records carried (bronze keeps
-- them in `extra`), so an error can say which field to map as the title.
-- Grain: one row per configured domain. Key: domain.
with
configured as (
    select domain from cfg_domains
),

items as (
    select domain, count(*) as n_items, count(*) filter (where has_text) as n_with_text,
        count(*) filter (where title is null) as n_without_title
    from stg_items
    group by domain
),

fields as (
    select domain, list(distinct field order by field) as fields_present
    from (
        select domain, unnest(json_keys(extra)) as field
        from bronze_items
        where domain in (select configured.domain from configured) and extra is not null
    )
    group by domain
)

select
    configured.domain,
    coalesce(items.n_items, 0) as n_items,
    coalesce(items.n_with_text, 0) as n_with_text,
    coalesce(items.n_without_title, 0) as n_without_title,
    coalesce(fields.fields_present, []) as fields_present
from configured
left join items on items.domain = configured.domain
left join fields on fields.domain = configured.domain
order by configured.domain;
