-- Per-user chronological domain sequences with their leave-one-out split (PAPER.md §2, §6).
-- Grain: one row per (domain, user_id, position). Key: (domain, user_id, position).
create or replace table fct_events as
with
kcore as (
    select domain, user_id, item_id, ts, source_line from int_kcore
),

long_enough as (
    -- leave-one-out needs train + valid + test: shorter histories are dropped from the domain
    select domain, user_id, count(*) as n_events
    from kcore
    group by domain, user_id
    having count(*) >= $min_sequence_len
),

sequenced as (
    -- chronological; events at the same ts keep the raw files' order ($tie_break = 'source_order',
    -- RecBole's stable sort) or go by item_id ('item_id'); item_id then makes the order total
    -- ((domain, user, item, ts) is unique after dedup)
    select
        kcore.domain,
        kcore.user_id,
        kcore.item_id,
        kcore.ts,
        row_number() over (
            partition by kcore.domain, kcore.user_id
            order by
                kcore.ts,
                case when $tie_break = 'source_order' then kcore.source_line end,
                kcore.item_id
        ) - 1 as position,
        long_enough.n_events
    from kcore
    join long_enough on long_enough.domain = kcore.domain and long_enough.user_id = kcore.user_id
),

split as (
    -- leave-one-out: last event = test, second last = valid, the rest = train
    select
        domain,
        user_id,
        position,
        item_id,
        ts,
        case
            when position = n_events - 1 then 'test'
            when position = n_events - 2 then 'valid'
            else 'train'
        end as split
    from sequenced
)

select domain, user_id, cast(position as integer) as position, item_id, ts, split from split;
