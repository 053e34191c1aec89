-- Events with exact duplicates collapsed, on integer keys, each flagged with the two filters
-- before the k-core: whether the per-domain user sample keeps its user and whether its item has
-- usable text. One pass over bronze; 70_fct_stats counts each step from these flags.
-- sequence_key is one integer per (domain, user): the k-core and the sequencing group on it.
-- Grain: one row per (domain, user_key, item_key, ts). Key: (sequence_key, item_key, ts).
create or replace table int_events as
with
staged as (
    select domain, user_id, item_id, ts, source_line from stg_interactions
),

domains as (
    select domain, domain_index, user_fraction, count(*) over () as n_domains from cfg_domains
),

keyed as (
    select
        staged.domain,
        int_user_keys.user_key,
        (int_user_keys.user_key - 1) * domains.n_domains + domains.domain_index as sequence_key,
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
-- counts its copies (bronze's event count); the same item at another time is a repeat purchase
select
    any_value(domain) as domain,
    any_value(user_key) as user_key,
    sequence_key,
    item_key,
    ts,
    min(source_line) as source_line,
    count(*) as n_copies,
    any_value(sampled) as sampled,
    any_value(has_text) as has_text
from keyed
group by sequence_key, item_key, ts;
