-- Deduplicated events of the users kept by a per-domain user sample (behaviors.user_fraction).
-- A domain without a fraction keeps every user. The sample is a fixed function of the user id
-- (the low 64 bits of its MD5), so it is the same on every run and machine, and it never splits
-- a user's events: a kept user keeps their whole history.
-- Grain: one row per (domain, user_id, item_id, ts). Key: (domain, user_id, item_id, ts).
create or replace table int_events_sampled as
with
events as (
    select domain, user_id, item_id, ts, source_line from int_events_dedup
),

fractions as (
    -- bound as two parallel lists: $sample_domains[i] keeps $sample_fractions[i] of its users
    select
        unnest($sample_domains::varchar[]) as domain,
        unnest($sample_fractions::double[]) as fraction
),

kept as (
    select events.domain, events.user_id, events.item_id, events.ts, events.source_line
    from events
    left join fractions on fractions.domain = events.domain
    where fractions.fraction is null
        or (md5_number_lower(events.user_id) % 1000000) < round(fractions.fraction * 1000000)
)

select domain, user_id, item_id, ts, source_line from kept;
