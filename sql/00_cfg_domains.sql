-- The configured domains and their role: the one place the domain lists enter SQL (bound as
-- $pretrain / $downstream, never formatted into the text).
-- Grain: one row per configured domain. Key: domain.
create or replace table cfg_domains as
with
pretrain as (
    -- pretrain domains feed the CPT corpus, including the mixed sequences
    select unnest($pretrain::varchar[]) as domain, 'pretrain' as role
),

downstream as (
    -- downstream domains get sequences and splits but stay out of CPT
    select unnest($downstream::varchar[]) as domain, 'downstream' as role
)

select domain, role from pretrain
union all
select domain, role from downstream;
