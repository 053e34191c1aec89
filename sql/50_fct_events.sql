-- Per-user chronological domain sequences with their leave-one-out split (PAPER.md §2, §6), the
-- domain and raw user and item ids joined back from their keys (the keys kept too, for 51-70).
-- Grain: one row per (domain, user_id, position). Key: (domain, user_id, position) (user_key orders
-- as user_id, so the export sorts on integers).
create or replace table fct_events as
with
kcore as (
    select sequence_key, item_key, ts, source_line from int_kcore
),

sequenced as (
    -- chronological; events at the same ts keep the raw files' order ($tie_break = 'source_order',
    -- RecBole's stable sort) or go by item_id ('item_id'); item_key (in item_id order) then makes
    -- the order total ((domain, user, item, ts) is unique after dedup)
    select
        sequence_key,
        item_key,
        ts,
        row_number() over user_events - 1 as position,
        count(*) over user_events as n_events
    from kcore
    window user_events as (
        partition by sequence_key
        order by ts, case when $tie_break = 'source_order' then source_line end, item_key
        rows between unbounded preceding and unbounded following
    )
),

split as (
    -- leave-one-out needs train + valid + test: shorter histories are dropped from the domain;
    -- last event = test, second last = valid, the rest = train
    select
        sequence_key % $n_domains as domain_index,
        sequence_key // $n_domains + 1 as user_key,
        item_key,
        position,
        ts,
        case
            when position = n_events - 1 then 'test'
            when position = n_events - 2 then 'valid'
            else 'train'
        end as split
    from sequenced
    where n_events >= $min_sequence_len
)

select
    $domain_names[split.domain_index + 1] as domain,
    int_user_keys.user_id,
    cast(split.position as integer) as position,
    int_item_keys.item_id,
    split.ts,
    split.split,
    split.user_key,
    split.item_key
from split
join int_user_keys on int_user_keys.user_key = split.user_key
join int_item_keys on int_item_keys.item_key = split.item_key;
