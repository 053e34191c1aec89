-- Every item the configured domains' events refer to, with an integer surrogate key (in
-- (domain, item_id) order, so ordering by item_key within a domain orders by item_id) and whether
-- it has usable text: an item without an item record has none.
-- Grain: one row per (domain, item_id). Key: (domain, item_id) (and item_key).
create or replace table int_item_keys as
with
referenced as (
    select distinct domain, item_id from stg_interactions
),

items as (
    select domain, item_id, has_text from stg_items
)

select
    referenced.domain,
    referenced.item_id,
    row_number() over (order by referenced.domain, referenced.item_id) as item_key,
    coalesce(items.has_text, false) as has_text
from referenced
left join items on items.domain = referenced.domain and items.item_id = referenced.item_id;
