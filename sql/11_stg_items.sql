-- Items of the configured domains, one record each (the most complete, then the latest), with
-- their text cleaned and judged once.
-- Grain: one row per (domain, item_id). Key: (domain, item_id).
create or replace table stg_items as
with
bronze as (
    select domain, item_id, title, categories, description, filename, file_row_number from bronze_items
),

configured as (
    select domain from cfg_domains
),

scored as (
    -- how complete a record is: a usable title counts most, then a category, then a description
    select
        domain,
        item_id,
        title,
        categories,
        filename,
        file_row_number,
        4 * coalesce(length(trim(title)) >= $min_title_chars, false)::integer
            + 2 * coalesce(len(list_filter(categories, lambda c: trim(c) <> '')) > 0, false)::integer
            + coalesce(length(trim(description)) > 0, false)::integer as completeness
    from bronze
    where domain in (select configured.domain from configured)
),

latest as (
    -- one record per item: the most complete one, and of equally complete ones the last (a later
    -- record corrects an earlier one); 13_stg_item_duplicates counts the items this had to settle
    select domain, item_id, title, categories
    from scored
    qualify row_number() over (
        partition by domain, item_id order by completeness desc, filename desc, file_row_number desc
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
