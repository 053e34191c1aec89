-- All-domain mixed sequences (PAPER.md §2): a user's train events of every pretrain domain,
-- merged by time, for users active in at least two pretrain domains.
-- Grain: one row per (user_id, position). Key: (user_id, position) (user_key orders as user_id).
create or replace table fct_mixed as
with
events as (
    select domain, user_key, user_id, position, item_id, ts, split from fct_events
),

pretrain as (
    select domain from cfg_domains where role = 'pretrain'
),

pretrain_events as (
    -- downstream domains must stay unseen by CPT
    select domain, user_key, user_id, position, item_id, ts, split
    from events
    where domain in (select pretrain.domain from pretrain)
),

multi_domain_users as (
    -- a mixed sequence only adds to the domain sequences when it crosses domains
    select user_key from pretrain_events group by user_key having count(distinct domain) >= 2
),

train_events as (
    -- held-out valid/test events must never reach the corpus
    select pretrain_events.domain, pretrain_events.user_key, pretrain_events.user_id,
        pretrain_events.position, pretrain_events.item_id, pretrain_events.ts
    from pretrain_events
    join multi_domain_users on multi_domain_users.user_key = pretrain_events.user_key
    where pretrain_events.split = 'train'
),

merged as (
    -- by time; equal times ordered by domain, then by position within the domain sequence
    select
        user_key,
        user_id,
        row_number() over (partition by user_key order by ts, domain, position) - 1 as position,
        domain,
        item_id,
        ts
    from train_events
)

select user_id, cast(position as integer) as position, domain, item_id, ts, user_key from merged;
