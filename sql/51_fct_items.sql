-- The item catalogue of the final sequences: every item an event of fct_events refers to.
-- Grain: one row per (domain, item_id). Key: (domain, item_id) (item_key orders as it).
create or replace table fct_items as
with
used as (
    -- items that survived text filter, k-core and the sequence-length filter
    select distinct item_key from fct_events
),

items as (
    select dim_items.domain, dim_items.item_id, dim_items.item_key, stg_items.title, stg_items.category
    from dim_items
    join used on used.item_key = dim_items.item_key
    join stg_items on stg_items.domain = dim_items.domain and stg_items.item_id = dim_items.item_id
)

select domain, item_id, title, category, item_key from items;
