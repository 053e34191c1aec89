-- The final tables of the domains built here joined with the silver of the domains built before
-- (behaviors.py: unchanged since the silver on disk, or built by fan-out tasks): kept_items and
-- kept_stats hold those domains' rows, kept_events the events of theirs that the mixed sequences
-- read (pretrain domains; none when silver.mixed is kept too: silver.events takes kept partitions
-- as they are, never through here).
-- Each domain's rows are what a full rebuild gives it: every step before is per domain.
-- The surrogate keys are renumbered over the joined rows, in id order: their order is a full
-- rebuild's, which is all the sorts and windows after this use (no key is written).
create or replace table fct_events as
with
joined as (
    select domain, user_id, position, item_id, ts, split from fct_events
    union all
    select domain, user_id, position, item_id, ts, split from kept_events
),

users as (
    -- numbering the distinct users sorts far fewer strings than ranking every event
    select user_id, row_number() over (order by user_id) as user_key
    from (select distinct user_id from joined)
)

select joined.domain, joined.user_id, joined.position, joined.item_id, joined.ts, joined.split, users.user_key
from joined
join users on users.user_id = joined.user_id;

create or replace table dim_items as
with
joined as (
    select domain, item_id, title, category from dim_items
    union all
    select domain, item_id, title, category from kept_items
)

select domain, item_id, title, category, row_number() over (order by domain, item_id) as item_key
from joined;

create or replace table fct_stats as
select domain, step, n_users, n_items, n_events from fct_stats
union all
select domain, step, n_users, n_items, n_events from kept_stats;
