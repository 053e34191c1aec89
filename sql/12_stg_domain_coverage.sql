-- Which domains bronze holds versus which the config asks for: behaviors.py refuses to run when
-- a configured domain has no events or no items, naming the domains that do exist.
-- Grain: one row per domain that is configured or present in bronze. Key: domain.
with
configured as (
    select domain, role from cfg_domains
),

events_per_domain as (
    select domain, count(*) as n_events from bronze_interactions group by domain
),

items_per_domain as (
    select domain, count(*) as n_items from bronze_items group by domain
),

all_domains as (
    select domain from configured
    union
    select domain from events_per_domain
    union
    select domain from items_per_domain
)

select
    all_domains.domain,
    configured.role,
    coalesce(events_per_domain.n_events, 0) as n_bronze_events,
    coalesce(items_per_domain.n_items, 0) as n_bronze_items
from all_domains
left join configured on configured.domain = all_domains.domain
left join events_per_domain on events_per_domain.domain = all_domains.domain
left join items_per_domain on items_per_domain.domain = all_domains.domain
order by all_domains.domain;
