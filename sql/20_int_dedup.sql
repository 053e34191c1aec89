-- Events with exact duplicates collapsed.
-- Grain: one row per (domain, user_id, item_id, ts). Key: (domain, user_id, item_id, ts).
create or replace table int_events_dedup as
with
staged as (
    select domain, user_id, item_id, ts, source_line from stg_interactions
),

distinct_events as (
    -- the same (domain, user, item, ts) twice is one event logged twice: it keeps its first line;
    -- the same item at another time is a repeat purchase and stays
    select domain, user_id, item_id, ts, min(source_line) as source_line
    from staged
    group by domain, user_id, item_id, ts
)

select domain, user_id, item_id, ts, source_line from distinct_events;
