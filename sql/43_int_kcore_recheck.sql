-- One later pass of the k-core: delete the events of the users and items below $k
-- (kcore_thin_users / kcore_thin_items), take those events off their users' and items' counts,
-- and make the keys that this took below $k the next pass's thin keys (a key already below $k
-- has no events left). behaviors.py repeats this pass until kcore_removed is empty; the result
-- is the same table a full recount per pass gives.
-- Grain: kcore_removed one row per deleted event (sequence_key, item_key).
create or replace temp table kcore_removed as
select sequence_key, item_key
from int_kcore
where sequence_key in (select kcore_thin_users.sequence_key from kcore_thin_users)
    or item_key in (select kcore_thin_items.item_key from kcore_thin_items);

delete from int_kcore
where sequence_key in (select kcore_thin_users.sequence_key from kcore_thin_users)
    or item_key in (select kcore_thin_items.item_key from kcore_thin_items);

create or replace temp table kcore_user_drops as
select sequence_key, count(*) as n_removed from kcore_removed group by sequence_key;

create or replace temp table kcore_item_drops as
select item_key, count(*) as n_removed from kcore_removed group by item_key;

update kcore_user_counts set n_events = kcore_user_counts.n_events - drops.n_removed
from kcore_user_drops as drops
where drops.sequence_key = kcore_user_counts.sequence_key;

update kcore_item_counts set n_events = kcore_item_counts.n_events - drops.n_removed
from kcore_item_drops as drops
where drops.item_key = kcore_item_counts.item_key;

create or replace temp table kcore_thin_users as
select counts.sequence_key
from kcore_user_counts as counts
join kcore_user_drops as drops on drops.sequence_key = counts.sequence_key
where counts.n_events < $k and counts.n_events + drops.n_removed >= $k;

create or replace temp table kcore_thin_items as
select counts.item_key
from kcore_item_counts as counts
join kcore_item_drops as drops on drops.item_key = counts.item_key
where counts.n_events < $k and counts.n_events + drops.n_removed >= $k;
