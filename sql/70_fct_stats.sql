-- Counts after each cleaning step, so every loss of data is visible per domain.
-- Grain: one row per (configured domain, step); a step that left nothing has zeros.
-- Key: (domain, step).
create or replace table fct_stats as
with
bronze as (
    select domain, user_id, item_id from stg_interactions
),

dedup as (
    select domain, user_id, item_id from int_events_dedup
),

sampled as (
    select domain, user_id, item_id from int_events_sampled
),

with_text as (
    select domain, user_id, item_id from int_events_text
),

kcore as (
    select domain, user_id, item_id from int_kcore
),

sequences as (
    select domain, user_id, item_id from fct_events
),

configured as (
    select domain from cfg_domains
),

steps as (
    select step from (values ('bronze'), ('dedup'), ('sample'), ('text'), ('kcore'), ('sequences')) as s (step)
),

counts as (
    select domain, 'bronze' as step, count(distinct user_id) as n_users,
        count(distinct item_id) as n_items, count(*) as n_events
    from bronze group by domain
    union all
    select domain, 'dedup', count(distinct user_id), count(distinct item_id), count(*)
    from dedup group by domain
    union all
    select domain, 'sample', count(distinct user_id), count(distinct item_id), count(*)
    from sampled group by domain
    union all
    select domain, 'text', count(distinct user_id), count(distinct item_id), count(*)
    from with_text group by domain
    union all
    select domain, 'kcore', count(distinct user_id), count(distinct item_id), count(*)
    from kcore group by domain
    union all
    select domain, 'sequences', count(distinct user_id), count(distinct item_id), count(*)
    from sequences group by domain
),

complete as (
    -- every configured domain gets every step, so a domain emptied by a filter shows as zeros
    select
        configured.domain,
        steps.step,
        coalesce(counts.n_users, 0) as n_users,
        coalesce(counts.n_items, 0) as n_items,
        coalesce(counts.n_events, 0) as n_events
    from configured
    cross join steps
    left join counts on counts.domain = configured.domain and counts.step = steps.step
)

select domain, step, n_users, n_items, n_events from complete;
