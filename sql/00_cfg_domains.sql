-- The configured domains and their role: the one place the domain lists enter SQL (bound as
-- $pretrain / $downstream, never formatted into the text).
-- Each domain also gets a small index (in domain order), which with the user's surrogate key
-- makes one integer per (domain, user) sequence, and its share of users kept by the per-domain
-- user sample (behaviors.user_fraction; null keeps every user), bound as two parallel lists:
-- $sample_domains[i] keeps $sample_fractions[i] of its users.
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
),

configured as (
    -- a domain listed twice is one domain (the config keeps pretrain and downstream apart)
    select distinct domain, role from pretrain
    union all
    select distinct domain, role from downstream
),

fractions as (
    select
        unnest($sample_domains::varchar[]) as domain,
        unnest($sample_fractions::double[]) as fraction
)

select
    configured.domain,
    configured.role,
    (row_number() over (order by configured.domain) - 1)::integer as domain_index,
    fractions.fraction as user_fraction
from configured
left join fractions on fractions.domain = configured.domain;
