-- The working table of the iterative k-core, started from the events with text;
-- 41_int_kcore_step.sql then shrinks it in place until it is a k-core.
-- Grain: one row per (domain, user_id, item_id, ts). Key: (domain, user_id, item_id, ts).
create or replace table int_kcore as
with
events as (
    select domain, user_id, item_id, ts, source_line from int_events_text
)

select domain, user_id, item_id, ts, source_line from events;
