-- grain: one row per as_of_date, kpi, dimension and dimension_value (definitions: shared/contract.md section 3, docs/kpis.md)
with as_of as (
    select
        as_of_date,
        as_of_end,
        as_of_date - 29 as period_start
    from as_of_dates
),

purchases as (
    select * from int_purchases
),

customers as (
    select * from int_customers
),

tiers as (
    select as_of_date, customer_id, tier from marts.customer_value_tier
    where as_of_date in (select as_of_date from as_of)
),

segments as (
    select as_of_date, customer_id, segment from marts.customer_rfm
    where as_of_date in (select as_of_date from as_of)
),

surveys as (
    select * from staging.stg_surveys
),

complaints as (
    select * from staging.stg_complaints
),

contacts as (
    select * from staging.stg_campaign_contacts
),

loyalty as (
    select * from staging.stg_loyalty_events
),

spend as (
    select * from staging.stg_marketing_spend
),

-- one row per customer and day with a purchase in the 365 days: the activity windows
purchase_windows as (
    select
        purchases.as_of_date,
        purchases.customer_id,
        max(case when purchases.order_date between purchases.as_of_date - 119
            and purchases.as_of_date - 30 then 1 else 0 end) as active_at_start,
        max(case when purchases.order_date >= purchases.as_of_date - 89 then 1 else 0 end)
            as active_at_end,
        count(*) as purchases_365d
    from purchases
    where purchases.as_of_date in (select as_of_date from as_of)
    group by purchases.as_of_date, purchases.customer_id
),

-- one row per customer and day: the customer-based KPIs' flags
customer_activity as (
    select
        customers.as_of_date,
        customers.customer_id,
        coalesce(purchase_windows.active_at_start, 0) as active_at_start,
        coalesce(purchase_windows.active_at_end, 0) as active_at_end,
        case when customers.first_purchase_date >= as_of.period_start then 1 else 0 end as is_new,
        coalesce(purchase_windows.purchases_365d, 0) as purchases_365d,
        case when customers.loyalty_member then 1 else 0 end as loyalty_member
    from customers
    inner join as_of
        on customers.as_of_date = as_of.as_of_date
    left join purchase_windows
        on customers.as_of_date = purchase_windows.as_of_date
        and customers.customer_id = purchase_windows.customer_id
),

-- every fact the KPIs count, one row each, in one shape: what kind of fact, whose, and its
-- measures; money stays decimal so sums are exact and a rerun gives the same bits
facts as (
    select
        as_of_date, customer_id, cast(null as varchar) as channel, 'customer' as kind,
        active_at_start as flag_a, active_at_end as flag_b, is_new as flag_c,
        case when purchases_365d >= 1 then 1 else 0 end as flag_d,
        case when purchases_365d >= 2 then 1 else 0 end as flag_e,
        loyalty_member as flag_f,
        cast(null as decimal(18, 2)) as amount, cast(null as double precision) as hours
    from customer_activity

    union all
    select
        purchases.as_of_date, purchases.customer_id, purchases.channel, 'purchase',
        0, 0, 0, 0, 0, 0, purchases.net_amount, null
    from purchases
    inner join as_of
        on purchases.as_of_date = as_of.as_of_date
        and purchases.order_date >= as_of.period_start

    union all
    select
        as_of.as_of_date, surveys.customer_id, null, surveys.survey_type,
        case when surveys.survey_type = 'csat' and surveys.score >= 4 then 1
             when surveys.survey_type = 'nps' and surveys.score >= 9 then 1 else 0 end,
        case when surveys.survey_type = 'nps' and surveys.score <= 6 then 1 else 0 end,
        0, 0, 0, 0, null, null
    from as_of
    inner join surveys
        on surveys.valid_from < as_of.as_of_end
        and surveys.valid_to >= as_of.as_of_end
        and cast(surveys.responded_at as date) between as_of.period_start and as_of.as_of_date
    where surveys.survey_type in ('csat', 'nps')

    union all
    select
        as_of.as_of_date, complaints.customer_id, null, 'complaint_opened',
        case when complaints.first_response_at < as_of.as_of_end then 1 else 0 end,
        0, 0, 0, 0, 0, null,
        case when complaints.first_response_at < as_of.as_of_end
            then extract(epoch from (complaints.first_response_at - complaints.opened_at)) / 3600.0
        end
    from as_of
    inner join complaints
        on complaints.valid_from < as_of.as_of_end
        and complaints.valid_to >= as_of.as_of_end
        and cast(complaints.opened_at as date) between as_of.period_start and as_of.as_of_date

    union all
    select
        as_of.as_of_date, complaints.customer_id, null, 'complaint_closed',
        case when complaints.closed_at - complaints.opened_at <= {{ sla_hours }} * interval '1 hour'
            then 1 else 0 end,
        0, 0, 0, 0, 0, null,
        extract(epoch from (complaints.closed_at - complaints.opened_at)) / 3600.0
    from as_of
    inner join complaints
        on complaints.valid_from < as_of.as_of_end
        and complaints.valid_to >= as_of.as_of_end
        and cast(complaints.closed_at as date) between as_of.period_start and as_of.as_of_date

    union all
    select
        as_of.as_of_date, contacts.customer_id, null, 'contact',
        case when contacts.responded_at < as_of.as_of_end
            and contacts.responded_at <= contacts.contacted_at + {{ response_days }} * interval '1 day'
            then 1 else 0 end,
        0, 0, 0, 0, 0, null, null
    from as_of
    inner join contacts
        on contacts.valid_from < as_of.as_of_end
        and contacts.valid_to >= as_of.as_of_end
        and cast(contacts.contacted_at as date) between as_of.period_start and as_of.as_of_date

    union all
    select
        as_of.as_of_date, loyalty.customer_id, null, 'points_' || loyalty.kind,
        0, 0, 0, 0, 0, 0, loyalty.points, null
    from as_of
    inner join loyalty
        on loyalty.valid_from < as_of.as_of_end
        and loyalty.valid_to >= as_of.as_of_end
        and cast(loyalty.occurred_at as date) between as_of.period_start and as_of.as_of_date
    where loyalty.kind in ('earn', 'redeem')

    union all
    select
        as_of.as_of_date, null, null, 'acquisition_spend',
        0, 0, 0, 0, 0, 0, spend.amount, null
    from as_of
    inner join spend
        on spend.valid_from < as_of.as_of_end
        and spend.valid_to >= as_of.as_of_end
        and spend.spend_date between as_of.period_start and as_of.as_of_date
    where spend.objective = 'acquisition'
),

dimensions as (
    select 'all' as dimension
    union all select 'tier'
    union all select 'segment'
    union all select 'region'
    union all select 'channel'
),

-- each fact with the customer's tier, segment and region as of the day
facts_with_customer as (
    select
        facts.*,
        coalesce(tiers.tier, 'unassigned') as tier,
        coalesce(segments.segment, 'unassigned') as segment,
        coalesce(customers.region, 'unknown') as region
    from facts
    left join tiers
        on facts.as_of_date = tiers.as_of_date and facts.customer_id = tiers.customer_id
    left join segments
        on facts.as_of_date = segments.as_of_date and facts.customer_id = segments.customer_id
    left join customers
        on facts.as_of_date = customers.as_of_date and facts.customer_id = customers.customer_id
),

-- each fact once per dimension it counts in; marketing spend belongs to no customer
-- ('all' only), the channel dimension is the order's channel (purchases only)
facts_by_dimension as (
    select
        facts_with_customer.*,
        dimensions.dimension,
        case dimensions.dimension
            when 'all' then 'all'
            when 'tier' then facts_with_customer.tier
            when 'segment' then facts_with_customer.segment
            when 'region' then facts_with_customer.region
            when 'channel' then facts_with_customer.channel
        end as dimension_value
    from facts_with_customer
    cross join dimensions
    where dimensions.dimension = 'all'
        or (dimensions.dimension = 'channel' and facts_with_customer.kind = 'purchase')
        or (dimensions.dimension in ('tier', 'segment', 'region')
            and facts_with_customer.customer_id is not null)
),

aggregated as (
    select
        as_of_date,
        dimension,
        dimension_value,
        sum(case when kind = 'customer' then flag_a else 0 end) as active_at_start,
        sum(case when kind = 'customer' then flag_b else 0 end) as active_at_end,
        sum(case when kind = 'customer' and flag_a = 1 and flag_b = 0 then 1 else 0 end) as churned,
        sum(case when kind = 'customer' then flag_c else 0 end) as new_customers,
        sum(case when kind = 'customer' then flag_d else 0 end) as buyers_365d,
        sum(case when kind = 'customer' then flag_e else 0 end) as repeat_buyers_365d,
        sum(case when kind = 'customer' and flag_b = 1 then flag_f else 0 end) as active_members,
        sum(case when kind = 'purchase' then 1 else 0 end) as orders,
        count(distinct case when kind = 'purchase' then customer_id end) as ordering_customers,
        sum(case when kind = 'purchase' then amount else 0 end) as net_revenue,
        sum(case when kind = 'csat' then 1 else 0 end) as csat_responses,
        sum(case when kind = 'csat' then flag_a else 0 end) as csat_satisfied,
        sum(case when kind = 'nps' then 1 else 0 end) as nps_responses,
        sum(case when kind = 'nps' then flag_a - flag_b else 0 end) as nps_net_promoters,
        sum(case when kind = 'complaint_opened' then 1 else 0 end) as complaints_opened,
        sum(case when kind = 'complaint_opened' then flag_a else 0 end) as complaints_responded,
        percentile_cont(0.5) within group (
            order by case when kind = 'complaint_opened' then hours end) as median_first_response,
        sum(case when kind = 'complaint_closed' then 1 else 0 end) as complaints_closed,
        sum(case when kind = 'complaint_closed' then flag_a else 0 end) as closed_within_sla,
        percentile_cont(0.5) within group (
            order by case when kind = 'complaint_closed' then hours end) as median_resolution,
        sum(case when kind = 'contact' then 1 else 0 end) as contacts,
        sum(case when kind = 'contact' then flag_a else 0 end) as contacts_responded,
        sum(case when kind = 'points_earn' then amount else 0 end) as points_earned,
        sum(case when kind = 'points_redeem' then amount else 0 end) as points_redeemed,
        sum(case when kind = 'acquisition_spend' then amount else 0 end) as acquisition_spend
    from facts_by_dimension
    group by as_of_date, dimension, dimension_value
),

-- (kpi, numerator, denominator, scale); medians carry their count as denominator
kpi_rows as (
    select as_of_date, dimension, dimension_value, 'active_customers' as kpi,
        cast(active_at_end as double precision) as numerator,
        cast(null as double precision) as denominator,
        cast(active_at_end as double precision) as value
    from aggregated where dimension <> 'channel'
    union all
    select as_of_date, dimension, dimension_value, 'churn_rate', churned, active_at_start,
        churned * 1.0 / nullif(active_at_start, 0)
    from aggregated where dimension <> 'channel'
    union all
    select as_of_date, dimension, dimension_value, 'retention_rate',
        active_at_end - new_customers, active_at_start,
        (active_at_end - new_customers) * 1.0 / nullif(active_at_start, 0)
    from aggregated where dimension <> 'channel'
    union all
    select as_of_date, dimension, dimension_value, 'new_customers', new_customers, null, new_customers
    from aggregated where dimension <> 'channel'
    union all
    select as_of_date, dimension, dimension_value, 'repeat_purchase_rate',
        repeat_buyers_365d, buyers_365d, repeat_buyers_365d * 1.0 / nullif(buyers_365d, 0)
    from aggregated where dimension <> 'channel'
    union all
    select as_of_date, dimension, dimension_value, 'purchase_frequency',
        orders, ordering_customers, orders * 1.0 / nullif(ordering_customers, 0)
    from aggregated
    union all
    select as_of_date, dimension, dimension_value, 'aov',
        net_revenue, orders, net_revenue / nullif(orders, 0)
    from aggregated
    union all
    select as_of_date, dimension, dimension_value, 'csat',
        csat_satisfied, csat_responses, 100.0 * csat_satisfied / nullif(csat_responses, 0)
    from aggregated where dimension <> 'channel'
    union all
    select as_of_date, dimension, dimension_value, 'nps',
        nps_net_promoters, nps_responses, 100.0 * nps_net_promoters / nullif(nps_responses, 0)
    from aggregated where dimension <> 'channel'
    union all
    select as_of_date, dimension, dimension_value, 'cac',
        acquisition_spend, new_customers, acquisition_spend / nullif(new_customers, 0)
    from aggregated where dimension = 'all'
    union all
    select as_of_date, dimension, dimension_value, 'complaints_per_1000_orders',
        complaints_opened, orders, 1000.0 * complaints_opened / nullif(orders, 0)
    from aggregated where dimension <> 'channel'
    union all
    select as_of_date, dimension, dimension_value, 'complaint_first_response_hours',
        null, complaints_responded, median_first_response
    from aggregated where dimension <> 'channel'
    union all
    select as_of_date, dimension, dimension_value, 'complaint_resolution_hours',
        null, complaints_closed, median_resolution
    from aggregated where dimension <> 'channel'
    union all
    select as_of_date, dimension, dimension_value, 'complaint_sla_rate',
        closed_within_sla, complaints_closed, closed_within_sla * 1.0 / nullif(complaints_closed, 0)
    from aggregated where dimension <> 'channel'
    union all
    select as_of_date, dimension, dimension_value, 'campaign_response_rate',
        contacts_responded, contacts, contacts_responded * 1.0 / nullif(contacts, 0)
    from aggregated where dimension <> 'channel'
    union all
    select as_of_date, dimension, dimension_value, 'loyalty_member_share',
        active_members, active_at_end, active_members * 1.0 / nullif(active_at_end, 0)
    from aggregated where dimension <> 'channel'
    union all
    select as_of_date, dimension, dimension_value, 'points_redemption_rate',
        points_redeemed, points_earned, points_redeemed / nullif(points_earned, 0)
    from aggregated where dimension <> 'channel'
),

final as (
    select
        as_of_date,
        kpi,
        dimension,
        dimension_value,
        cast(value as double precision) as value,
        cast(numerator as double precision) as numerator,
        cast(denominator as double precision) as denominator
    from kpi_rows
)

select * from final
