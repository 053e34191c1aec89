-- The working table of the iterative k-core: the events the user sample keeps whose item has
-- usable text (an event without a renderable item cannot enter the prompt template, PAPER.md §1;
-- 70_fct_stats counts the loss). 41-43 then shrink it until it is a k-core.
-- Grain: one row per (domain, user_key, item_key, ts). Key: (sequence_key, item_key, ts).
create or replace table int_kcore as
with
events as (
    select sequence_key, item_key, ts, source_line, sampled, has_text from int_events
)

select sequence_key, item_key, ts, source_line from events where sampled and has_text;
