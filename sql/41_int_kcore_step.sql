-- One pass of the iterative k-core per domain: delete every event of a user or an item with
-- fewer than $k events in its domain (events counted, so repeat purchases count, as RecBole's
-- inter_num filters do). Removing an item can push a user below k and vice versa, so
-- behaviors.py repeats this pass until it deletes nothing.
-- Grain of int_kcore: one row per (domain, user_id, item_id, ts). Returns: the deleted count.
with
kcore as (
    select domain, user_id, item_id from int_kcore
),

thin_users as (
    select domain, user_id from kcore group by domain, user_id having count(*) < $k
),

thin_items as (
    select domain, item_id from kcore group by domain, item_id having count(*) < $k
)

delete from int_kcore
where exists (
    select 1 from thin_users
    where thin_users.domain = int_kcore.domain and thin_users.user_id = int_kcore.user_id
)
or exists (
    select 1 from thin_items
    where thin_items.domain = int_kcore.domain and thin_items.item_id = int_kcore.item_id
);
