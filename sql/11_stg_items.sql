-- Items of the configured domains, one record each, with their text cleaned and judged once.
-- Grain: one row per (domain, item_id). Key: (domain, item_id).
create or replace table stg_items as
with
bronze as (
    select domain, item_id, title, categories, filename, file_row_number from bronze_items
),

configured as (
    select domain from cfg_domains
),

latest as (
    -- the last bronze record of an item wins: a later metadata record corrects an earlier one
    select domain, item_id, title, categories
    from bronze
    where domain in (select configured.domain from configured)
    qualify row_number() over (
        partition by domain, item_id order by filename desc, file_row_number desc
    ) = 1
),

cleaned as (
    -- titles lose surrounding whitespace; the leaf of the category path is its most specific label
    select
        domain,
        item_id,
        nullif(regexp_replace(title, '^\s+|\s+$', '', 'g'), '') as title,
        nullif(regexp_replace(list_extract(categories, -1), '^\s+|\s+$', '', 'g'), '') as category
    from latest
)

select
    domain,
    item_id,
    title,
    category,
    -- an item is renderable as text (PAPER.md §1) only with a title of at least min_title_chars
    coalesce(length(title) >= $min_title_chars, false) as has_text
from cleaned;
