-- Counts after each cleaning step, so every loss of data is visible per domain: each step is an
-- aggregate over integer keys of the table that step made (the cleaning steps are flags on
-- int_events; dedup keeps every user and item, so bronze shares its distinct counts, and its
-- event count is the copies dedup collapsed). Domains are grouped by their index, which a
-- sequence_key carries ((user_key - 1) * $n_domains + domain_index, 20_int_events), and named
-- from $domain_names (cfg_domains' domains in index order).
-- A step that keeps none of a user's events does not count the user (count(*) filter on
-- bool_or): the same as counting distinct users among the step's events.
-- Grain: one row per (configured domain, step); a step that left nothing has zeros.
-- Key: (domain, step).
create or replace table fct_stats as
with
users as (
    -- whether any of a user's (an item's) events passed each filter: distinct counts come from
    -- one grouping per key instead of a distinct hash table per step
    select any_value(sequence_key % $n_domains) as domain_index, bool_or(sampled) as sampled,
        bool_or(sampled and has_text) as with_text
    from int_events
    group by sequence_key
),

items as (
    select any_value(sequence_key % $n_domains) as domain_index, bool_or(sampled) as sampled,
        bool_or(sampled and has_text) as with_text
    from int_events
    group by item_key
),

user_counts as (
    select domain_index, count(*) as dedup, count(*) filter (where sampled) as sample,
        count(*) filter (where with_text) as text
    from users group by domain_index
),

item_counts as (
    select domain_index, count(*) as dedup, count(*) filter (where sampled) as sample,
        count(*) filter (where with_text) as text
    from items group by domain_index
),

event_counts as (
    select sequence_key % $n_domains as domain_index, sum(n_copies) as bronze, count(*) as dedup,
        count(*) filter (where sampled) as sample, count(*) filter (where sampled and has_text) as text
    from int_events group by domain_index
),

cleaning as (
    select
        $domain_names[event_counts.domain_index + 1] as domain,
        event_counts.bronze as bronze_events,
        user_counts.dedup as dedup_users,
        item_counts.dedup as dedup_items,
        event_counts.dedup as dedup_events,
        user_counts.sample as sample_users,
        item_counts.sample as sample_items,
        event_counts.sample as sample_events,
        user_counts.text as text_users,
        item_counts.text as text_items,
        event_counts.text as text_events
    from event_counts
    join user_counts on user_counts.domain_index = event_counts.domain_index
    join item_counts on item_counts.domain_index = event_counts.domain_index
),

kcore_users as (
    select sequence_key % $n_domains as domain_index, count(*) as n_events from int_kcore group by sequence_key
),

kcore_items as (
    select any_value(sequence_key % $n_domains) as domain_index from int_kcore group by item_key
),

kcore as (
    select $domain_names[users.domain_index + 1] as domain, users.n_users, items.n_items, users.n_events
    from (
        select domain_index, count(*) as n_users, sum(n_events) as n_events from kcore_users group by domain_index
    ) as users
    join (select domain_index, count(*) as n_items from kcore_items group by domain_index) as items
        on items.domain_index = users.domain_index
),

sequences as (
    -- every sequence has one event at position 0; dim_items holds the items the sequences use
    select events.domain, events.n_users, items.n_items, events.n_events
    from (
        select domain, count(*) filter (where position = 0) as n_users, count(*) as n_events
        from fct_events group by domain
    ) as events
    join (select domain, count(*) as n_items from dim_items group by domain) as items
        on items.domain = events.domain
),

counts as (
    select domain, 'bronze' as step, dedup_users as n_users, dedup_items as n_items,
        bronze_events as n_events
    from cleaning
    union all
    select domain, 'dedup', dedup_users, dedup_items, dedup_events from cleaning
    union all
    select domain, 'sample', sample_users, sample_items, sample_events from cleaning
    union all
    select domain, 'text', text_users, text_items, text_events from cleaning
    union all
    select domain, 'kcore', n_users, n_items, n_events from kcore
    union all
    select domain, 'sequences', n_users, n_items, n_events from sequences
),

configured as (
    select domain from cfg_domains
),

steps as (
    select step from (values ('bronze'), ('dedup'), ('sample'), ('text'), ('kcore'), ('sequences')) as s (step)
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
