-- The item catalogue of the final sequences: every item an event of fct_events refers to.
-- Grain: one row per (domain, item_id). Key: (domain, item_id).
create or replace table fct_items as
with
used as (
    -- items that survived text filter, k-core and the sequence-length filter
    select distinct domain, item_id from fct_events
),

items as (
    select domain, item_id, title, category from stg_items
)

select items.domain, items.item_id, items.title, items.category
from items
join used on used.domain = items.domain and used.item_id = items.item_id;
