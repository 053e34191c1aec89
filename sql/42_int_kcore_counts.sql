-- The k-core's counts after its first pass (41_int_kcore_step): events per user (sequence_key)
-- and per item left in int_kcore, and the users and items now below $k, whose events the next
-- pass (43_int_kcore_recheck) deletes. From here on a pass counts only what it deleted: the
-- first pass deletes most of what the k-core ever deletes, the later ones a few thousand events.
-- Grain: kcore_user_counts one row per sequence_key, kcore_item_counts one per item_key;
-- kcore_thin_users / kcore_thin_items one row per key below $k.
create or replace temp table kcore_user_counts as
select sequence_key, count(*) as n_events from int_kcore group by sequence_key;

create or replace temp table kcore_item_counts as
select item_key, count(*) as n_events from int_kcore group by item_key;

create or replace temp table kcore_thin_users as
select sequence_key from kcore_user_counts where n_events < $k;

create or replace temp table kcore_thin_items as
select item_key from kcore_item_counts where n_events < $k;
