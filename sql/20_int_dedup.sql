-- Events with exact duplicates collapsed.
-- Grain: one row per (domain, user_id, item_id, ts). Key: (domain, user_id, item_id, ts).
create or replace table int_events_dedup as
with
staged as (
    select domain, user_id, item_id, ts from stg_interactions
),

distinct_events as (
    -- the same (domain, user, item, ts) twice is one event logged twice; the same item at another
    -- time is a repeat purchase and stays
    select distinct domain, user_id, item_id, ts from staged
)

select domain, user_id, item_id, ts from distinct_events;
