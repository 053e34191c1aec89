-- Every user of the configured domains' events, with an integer surrogate key: the big tables
-- downstream hash and sort 8-byte keys instead of the raw user-id strings, which 50_fct_events
-- joins back once at the end. Keys follow user_id order, so ordering by user_key orders by
-- user_id. Each user also gets the sample bucket of behaviors.user_fraction: a fixed function of
-- the user id (the low 64 bits of its MD5, mod 10^6), the same on every run and machine.
-- Grain: one row per user_id. Key: user_id (and user_key).
create or replace table int_user_keys as
with
users as (
    select distinct user_id from stg_interactions
)

select
    user_id,
    row_number() over (order by user_id) as user_key,
    (md5_number_lower(user_id) % 1000000)::integer as sample_bucket
from users;
