-- Events with exact duplicates collapsed, on integer keys, each flagged with the two filters
-- before the k-core: whether the per-domain user sample keeps its user and whether its item has
-- usable text. One pass over bronze; 70_fct_stats counts each step from these flags.
-- sequence_key is one integer per (domain, user): (user_key - 1) * $n_domains + domain_index
-- (cfg_domains' count and index), so both come back from it by arithmetic and no later table
-- carries them.
-- Grain: one row per (domain, user_key, item_key, ts). Key: (sequence_key, item_key, ts).
create or replace table int_events as
with
staged as (
    select domain, user_id, item_id, ts, source_line from stg_interactions
),

domains as (
    select domain, domain_index, user_fraction from cfg_domains
),

keyed as (
    select
        (int_user_keys.user_key - 1) * $n_domains + domains.domain_index as sequence_key,
        int_item_keys.item_key,
        staged.ts,
        staged.source_line,
        -- a domain without a fraction keeps every user; a kept user keeps their whole history
        domains.user_fraction is null
            or int_user_keys.sample_bucket < round(domains.user_fraction * 1000000) as sampled,
        int_item_keys.has_text
    from staged
    join domains on domains.domain = staged.domain
    join int_user_keys on int_user_keys.user_id = staged.user_id
    join int_item_keys on int_item_keys.domain = staged.domain and int_item_keys.item_id = staged.item_id
)

-- the same (domain, user, item, ts) twice is one event logged twice: it keeps its first line and
-- counts its copies (bronze's event count); the same item at another time is a repeat purchase.
-- sampled is a function of the sequence and has_text of the item, so grouping on them splits no
-- group (and is cheaper than carrying them through the aggregate)
select sequence_key, item_key, ts, sampled, has_text, min(source_line) as source_line, count(*) as n_copies
from keyed
group by sequence_key, item_key, ts, sampled, has_text;
