-- The item catalogue of the final sequences: every item an event of fct_events refers to.
-- Grain: one row per (domain, item_id). Key: (domain, item_id) (item_key orders as it).
create or replace table dim_items as
with
used as (
    -- items that survived text filter, k-core and the sequence-length filter
    select distinct item_key from fct_events
),

items as (
    select int_item_keys.domain, int_item_keys.item_id, int_item_keys.item_key, stg_items.title, stg_items.category
    from int_item_keys
    join used on used.item_key = int_item_keys.item_key
    join stg_items on stg_items.domain = int_item_keys.domain and stg_items.item_id = int_item_keys.item_id
)

select domain, item_id, title, category, item_key from items;
