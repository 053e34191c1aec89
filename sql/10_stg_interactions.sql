-- Bronze events of the configured domains, only the columns behaviour organisation needs
-- (source_line: the event's line in its raw file, the raw order that breaks ties in time).
-- A view: the bronze Parquet is read where it is used, never copied.
-- Grain: one row per bronze event (exact duplicates still present). Key: none.
create or replace temp view stg_interactions as
with
bronze as (
    select domain, user_id, item_id, ts, source_line from bronze_interactions
),

configured as (
    select domain from cfg_domains
)

select bronze.domain, bronze.user_id, bronze.item_id, bronze.ts, bronze.source_line
from bronze
where bronze.domain in (select configured.domain from configured);
