-- Deduplicated, sampled events whose item has usable text.
-- Grain: one row per (domain, user_id, item_id, ts). Key: (domain, user_id, item_id, ts).
create or replace table int_events_text as
with
events as (
    select domain, user_id, item_id, ts, source_line from int_events_sampled
),

usable_items as (
    select domain, item_id from stg_items where has_text
),

with_text as (
    -- an event whose item has no usable title (or no item record at all) cannot be rendered in
    -- the prompt template, so it is dropped here, before the k-core; 70_fct_stats counts the loss
    select events.domain, events.user_id, events.item_id, events.ts, events.source_line
    from events
    join usable_items on usable_items.domain = events.domain and usable_items.item_id = events.item_id
)

select domain, user_id, item_id, ts, source_line from with_text;
