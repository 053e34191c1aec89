-- The first pass of the iterative k-core per domain: delete every event of a user or an item
-- with fewer than $k events in its domain (events counted, so repeat purchases count, as
-- RecBole's inter_num filters do). Removing an item can push a user below k and vice versa, so
-- when this pass deletes anything, 42_int_kcore_counts and 43_int_kcore_recheck go on from the
-- counts. Both counts group on one integer (sequence_key is a user in a domain, item_key an
-- item of one domain); deletes only mark rows.
-- Grain of int_kcore: one row per (domain, user_key, item_key, ts). Returns: the deleted count.
with
kcore as (
    select sequence_key, item_key from int_kcore
),

thin_users as (
    select sequence_key from kcore group by sequence_key having count(*) < $k
),

thin_items as (
    select item_key from kcore group by item_key having count(*) < $k
)

delete from int_kcore
where sequence_key in (select thin_users.sequence_key from thin_users)
    or item_key in (select thin_items.item_key from thin_items);
