-- grain: one row per as_of_date, kpi, dimension and dimension_value (definitions: docs/kpis.md, "Definitions")
with as_of as (
    select
        as_of_date,
        as_of_end,
        as_of_date - 29 as period_start,
        as_of_end - 30 * interval '1 day' as cohort_end
    from as_of_dates
),

purchases as (
    select * from int_purchases
),

customers as (
    select * from int_customers
),

-- the marts hold every day built: read the spine's days by bounds the scan can skip by
-- (a semi-join on the spine would read the whole history, every night)
tiers as (
    select
        as_of_date,
        customer_id,
        tier
    from marts.customer_value_tier
    where as_of_date between {{ date_from }} and {{ date_to }}
),

segments as (
    select
        as_of_date,
        customer_id,
        segment
    from marts.customer_rfm
    where as_of_date between {{ date_from }} and {{ date_to }}
),

-- the d-30 cohort's tier and segment: where each customer stood when the cohort was taken
tiers_then as (
    select
        as_of_date,
        customer_id,
        tier
    from marts.customer_value_tier
    where as_of_date between {{ date_from }} - 30 and {{ date_to }} - 30
),

segments_then as (
    select
        as_of_date,
        customer_id,
        segment
    from marts.customer_rfm
    where as_of_date between {{ date_from }} - 30 and {{ date_to }} - 30
),

customer_versions as (
    select * from staging.stg_customers
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
        as_of_date,
        customer_id,
        active_at_start,
        active_at_end,
        purchases_365d,
        last_order_date_rfm
    from int_customer_days
),

-- one row per customer known by the day: the customer-based KPIs' flags, under the tier,
-- segment and region each had that day
customer_activity as (
    select
        customers.as_of_date,
        customers.customer_id,
        coalesce(purchase_windows.active_at_start, 0) as active_at_start,
        coalesce(purchase_windows.active_at_end, 0) as active_at_end,
        case when customers.first_purchase_date >= as_of.period_start then 1 else 0 end as is_new,
        -- back after a lapse: active at d, not at d-30, first purchase before the period
        case when purchase_windows.active_at_end = 1 and purchase_windows.active_at_start = 0
                and customers.first_purchase_date < as_of.period_start then 1
            else 0
        end
            as is_reactivated,
        case when purchase_windows.purchases_365d >= 1 then 1 else 0 end as buyer_365d,
        case when purchase_windows.purchases_365d >= 2 then 1 else 0 end as repeat_buyer_365d,
        case when purchase_windows.active_at_end = 1 and customers.loyalty_member
                then 1
            else 0
        end as active_member,
        -- the leading churn signal (docs/kpis.md): a regular buyer (4+ completed orders in
        -- the 365 days, one in the last 90) is overdue when the days since the last order
        -- pass overdue_factor times the usual gap (the days of the 365 known, from the
        -- first purchase if later, per order)
        case when purchase_windows.purchases_365d >= 4 and purchase_windows.active_at_end = 1
                then 1
            else 0
        end as regular_buyer,
        case when purchase_windows.purchases_365d >= 4 and purchase_windows.active_at_end = 1
                and (customers.as_of_date - purchase_windows.last_order_date_rfm)
                > {{ overdue_factor }} * (
                    customers.as_of_date
                    - greatest(customers.first_purchase_date, customers.as_of_date - 364) + 1
                ) / purchase_windows.purchases_365d
                then 1
            else 0
        end as overdue_regular,
        coalesce(tiers.tier, 'unassigned') as tier,
        coalesce(segments.segment, 'unassigned') as segment,
        coalesce(customers.region, 'unknown') as region
    from customers
    inner join as_of
        on customers.as_of_date = as_of.as_of_date
    left join purchase_windows
        on customers.as_of_date = purchase_windows.as_of_date
        and customers.customer_id = purchase_windows.customer_id
    left join tiers
        on customers.as_of_date = tiers.as_of_date
        and customers.customer_id = tiers.customer_id
    left join segments
        on customers.as_of_date = segments.as_of_date
        and customers.customer_id = segments.customer_id
),

-- every fact the KPIs count besides the customers' own flags, one row each, in one shape:
-- what kind of fact, whose, and its measures; money stays decimal so sums are exact and a
-- rerun gives the same bits
facts as (
    select
        purchases.as_of_date,
        purchases.customer_id,
        purchases.channel,
        'purchase' as kind,
        0 as flag_a,
        0 as flag_b,
        cast(purchases.net_amount as decimal(18, 2)) as amount,
        cast(null as double precision) as hours
    from purchases
    inner join as_of
        on purchases.as_of_date = as_of.as_of_date
        and purchases.order_date >= as_of.period_start

    union all
    select
        as_of.as_of_date,
        surveys.customer_id,
        null as channel,
        surveys.survey_type as kind,
        case when surveys.survey_type = 'csat' and surveys.score >= 4 then 1
            when surveys.survey_type = 'nps' and surveys.score >= 9 then 1 else 0
        end as flag_a,
        case when surveys.survey_type = 'nps' and surveys.score <= 6 then 1 else 0 end as flag_b,
        null as amount,
        null as hours
    from as_of
    inner join surveys
        on surveys.valid_from < as_of.as_of_end
        and surveys.valid_to >= as_of.as_of_end
        and cast(surveys.responded_at as date) between as_of.period_start and as_of.as_of_date
    where surveys.survey_type in ('csat', 'nps')

    union all
    select
        as_of.as_of_date,
        complaints.customer_id,
        null as channel,
        'complaint_opened' as kind,
        case when complaints.first_response_at < as_of.as_of_end then 1 else 0 end as flag_a,
        0 as flag_b,
        null as amount,
        case when complaints.first_response_at < as_of.as_of_end
                then extract(epoch from (complaints.first_response_at - complaints.opened_at))
                    / 3600.0
        end as hours
    from as_of
    inner join complaints
        on complaints.valid_from < as_of.as_of_end
        and complaints.valid_to >= as_of.as_of_end
        and cast(complaints.opened_at as date) between as_of.period_start and as_of.as_of_date

    union all
    select
        as_of.as_of_date,
        complaints.customer_id,
        null as channel,
        'complaint_closed' as kind,
        case when complaints.closed_at - complaints.opened_at <= {{ sla_hours }} * interval '1 hour'
                then 1
            else 0
        end as flag_a,
        0 as flag_b,
        null as amount,
        extract(epoch from (complaints.closed_at - complaints.opened_at)) / 3600.0 as hours
    from as_of
    inner join complaints
        on complaints.valid_from < as_of.as_of_end
        and complaints.valid_to >= as_of.as_of_end
        and cast(complaints.closed_at as date) between as_of.period_start and as_of.as_of_date

    union all
    select
        as_of.as_of_date,
        contacts.customer_id,
        null as channel,
        'contact' as kind,
        case when contacts.responded_at < as_of.as_of_end
                and contacts.responded_at
                <= contacts.contacted_at + {{ response_days }} * interval '1 day'
                then 1
            else 0
        end as flag_a,
        0 as flag_b,
        null as amount,
        null as hours
    from as_of
    inner join contacts
        on contacts.valid_from < as_of.as_of_end
        and contacts.valid_to >= as_of.as_of_end
        and cast(contacts.contacted_at as date) between as_of.period_start and as_of.as_of_date

    union all
    select
        as_of.as_of_date,
        loyalty.customer_id,
        null as channel,
        'points_' || loyalty.kind as kind,
        0 as flag_a,
        0 as flag_b,
        loyalty.points as amount,
        null as hours
    from as_of
    inner join loyalty
        on loyalty.valid_from < as_of.as_of_end
        and loyalty.valid_to >= as_of.as_of_end
        and cast(loyalty.occurred_at as date) between as_of.period_start and as_of.as_of_date
    where loyalty.kind in ('earn', 'redeem')

    union all
    select
        as_of.as_of_date,
        null as customer_id,
        null as channel,
        'acquisition_spend' as kind,
        0 as flag_a,
        0 as flag_b,
        spend.amount,
        null as hours
    from as_of
    inner join spend
        on spend.valid_from < as_of.as_of_end
        and spend.valid_to >= as_of.as_of_end
        and spend.spend_date between as_of.period_start and as_of.as_of_date
    where spend.objective = 'acquisition'
),

dimensions as (
    select 'all' as dimension
    union all
    select 'tier' as dimension
    union all
    select 'segment' as dimension
    union all
    select 'region' as dimension
),

-- each fact under the tier, segment and region its customer had that day (the facts of no
-- customer, marketing spend, under none): facts are summed per combination of the three,
-- never per customer, so no step groups millions of customer days
fact_dimensions as (
    select
        facts.*,
        coalesce(tiers.tier, 'unassigned') as tier,
        coalesce(segments.segment, 'unassigned') as segment,
        coalesce(customers.region, 'unknown') as region
    from facts
    left join tiers
        on facts.as_of_date = tiers.as_of_date
        and facts.customer_id = tiers.customer_id
    left join segments
        on facts.as_of_date = segments.as_of_date
        and facts.customer_id = segments.customer_id
    left join customers
        on facts.as_of_date = customers.as_of_date
        and facts.customer_id = customers.customer_id
),

-- churn and retention follow the d-30 cohort (the customers active at d-30), under the
-- tier, segment and region each had at d-30: a segment defined by recency (e.g. 'About to
-- sleep') must not churn by construction because its churners have left it by d
cohort_members as (
    select
        customer_activity.as_of_date,
        customer_activity.customer_id,
        customer_activity.active_at_end as retained,
        coalesce(tiers_then.tier, 'unassigned') as tier,
        coalesce(segments_then.segment, 'unassigned') as segment,
        coalesce(customer_versions.region, 'unknown') as region
    from customer_activity
    inner join as_of
        on customer_activity.as_of_date = as_of.as_of_date
    left join tiers_then
        on customer_activity.as_of_date - 30 = tiers_then.as_of_date
        and customer_activity.customer_id = tiers_then.customer_id
    left join segments_then
        on customer_activity.as_of_date - 30 = segments_then.as_of_date
        and customer_activity.customer_id = segments_then.customer_id
    left join customer_versions
        on customer_activity.customer_id = customer_versions.customer_id
        and customer_versions.valid_from < as_of.cohort_end
        and customer_versions.valid_to >= as_of.cohort_end
    where customer_activity.active_at_start = 1
),

-- the customers, their facts and the cohort summed per day and combination of tier,
-- segment and region (a few thousand rows), which every dimension then adds up; whose
-- facts (the spend of no customer counts in 'all' only). A customer day has one
-- combination, so the distinct ordering customers of the combinations add up.
combinations as (
    select
        as_of_date,
        true as has_customer,
        tier,
        segment,
        region,
        0 as cohort_size,
        0 as cohort_retained,
        sum(active_at_end) as active_at_end,
        sum(is_new) as new_customers,
        sum(is_reactivated) as reactivated_customers,
        sum(buyer_365d) as buyers_365d,
        sum(repeat_buyer_365d) as repeat_buyers_365d,
        sum(active_member) as active_members,
        0 as orders,
        0 as ordering_customers,
        0 as net_revenue,
        0 as csat_responses,
        0 as csat_satisfied,
        0 as nps_responses,
        0 as nps_net_promoters,
        0 as complaints_opened,
        0 as complaints_responded,
        0 as complaints_closed,
        0 as closed_within_sla,
        0 as contacts,
        0 as contacts_responded,
        0 as points_earned,
        0 as points_redeemed,
        0 as acquisition_spend,
        sum(regular_buyer) as regular_buyers,
        sum(overdue_regular) as overdue_regulars
    from customer_activity
    group by as_of_date, tier, segment, region

    union all
    select
        as_of_date,
        customer_id is not null as has_customer,
        tier,
        segment,
        region,
        0 as cohort_size,
        0 as cohort_retained,
        0 as active_at_end,
        0 as new_customers,
        0 as reactivated_customers,
        0 as buyers_365d,
        0 as repeat_buyers_365d,
        0 as active_members,
        sum(case when kind = 'purchase' then 1 else 0 end) as orders,
        count(distinct case when kind = 'purchase' then customer_id end) as ordering_customers,
        sum(case when kind = 'purchase' then amount else 0 end) as net_revenue,
        sum(case when kind = 'csat' then 1 else 0 end) as csat_responses,
        sum(case when kind = 'csat' then flag_a else 0 end) as csat_satisfied,
        sum(case when kind = 'nps' then 1 else 0 end) as nps_responses,
        sum(case when kind = 'nps' then flag_a - flag_b else 0 end) as nps_net_promoters,
        sum(case when kind = 'complaint_opened' then 1 else 0 end) as complaints_opened,
        sum(case when kind = 'complaint_opened' then flag_a else 0 end) as complaints_responded,
        sum(case when kind = 'complaint_closed' then 1 else 0 end) as complaints_closed,
        sum(case when kind = 'complaint_closed' then flag_a else 0 end) as closed_within_sla,
        sum(case when kind = 'contact' then 1 else 0 end) as contacts,
        sum(case when kind = 'contact' then flag_a else 0 end) as contacts_responded,
        sum(case when kind = 'points_earn' then amount else 0 end) as points_earned,
        sum(case when kind = 'points_redeem' then amount else 0 end) as points_redeemed,
        sum(case when kind = 'acquisition_spend' then amount else 0 end) as acquisition_spend,
        0 as regular_buyers,
        0 as overdue_regulars
    from fact_dimensions
    group by as_of_date, customer_id is not null, tier, segment, region

    union all
    select
        as_of_date,
        true as has_customer,
        tier,
        segment,
        region,
        count(*) as cohort_size,
        sum(retained) as cohort_retained,
        0 as active_at_end,
        0 as new_customers,
        0 as reactivated_customers,
        0 as buyers_365d,
        0 as repeat_buyers_365d,
        0 as active_members,
        0 as orders,
        0 as ordering_customers,
        0 as net_revenue,
        0 as csat_responses,
        0 as csat_satisfied,
        0 as nps_responses,
        0 as nps_net_promoters,
        0 as complaints_opened,
        0 as complaints_responded,
        0 as complaints_closed,
        0 as closed_within_sla,
        0 as contacts,
        0 as contacts_responded,
        0 as points_earned,
        0 as points_redeemed,
        0 as acquisition_spend,
        0 as regular_buyers,
        0 as overdue_regulars
    from cohort_members
    group by as_of_date, tier, segment, region
),

-- the medians cannot be added up: from the complaints themselves, per dimension value
complaint_medians as (
    select
        complaint_facts.as_of_date,
        dimensions.dimension,
        case dimensions.dimension
            when 'all' then 'all'
            when 'tier' then complaint_facts.tier
            when 'segment' then complaint_facts.segment
            when 'region' then complaint_facts.region
        end as dimension_value,
        percentile_cont(0.5) within group (
            order by case when complaint_facts.kind = 'complaint_opened'
                    then complaint_facts.hours
            end
        ) as median_first_response,
        percentile_cont(0.5) within group (
            order by case when complaint_facts.kind = 'complaint_closed'
                    then complaint_facts.hours
            end
        ) as median_resolution
    from fact_dimensions as complaint_facts
    cross join dimensions
    where complaint_facts.kind in ('complaint_opened', 'complaint_closed')
        and (dimensions.dimension = 'all' or complaint_facts.customer_id is not null)
    group by 1, 2, 3
),

-- every dimension from the combinations; the channel dimension is the order's channel
-- (purchases only)
summed as (
    select
        combinations.as_of_date,
        dimensions.dimension,
        case dimensions.dimension
            when 'all' then 'all'
            when 'tier' then combinations.tier
            when 'segment' then combinations.segment
            when 'region' then combinations.region
        end as dimension_value,
        sum(combinations.cohort_size) as cohort_size,
        sum(combinations.cohort_retained) as cohort_retained,
        sum(combinations.active_at_end) as active_at_end,
        sum(combinations.new_customers) as new_customers,
        sum(combinations.reactivated_customers) as reactivated_customers,
        sum(combinations.buyers_365d) as buyers_365d,
        sum(combinations.repeat_buyers_365d) as repeat_buyers_365d,
        sum(combinations.active_members) as active_members,
        sum(combinations.orders) as orders,
        sum(combinations.ordering_customers) as ordering_customers,
        sum(combinations.net_revenue) as net_revenue,
        sum(combinations.csat_responses) as csat_responses,
        sum(combinations.csat_satisfied) as csat_satisfied,
        sum(combinations.nps_responses) as nps_responses,
        sum(combinations.nps_net_promoters) as nps_net_promoters,
        sum(combinations.complaints_opened) as complaints_opened,
        sum(combinations.complaints_responded) as complaints_responded,
        sum(combinations.complaints_closed) as complaints_closed,
        sum(combinations.closed_within_sla) as closed_within_sla,
        sum(combinations.contacts) as contacts,
        sum(combinations.contacts_responded) as contacts_responded,
        sum(combinations.points_earned) as points_earned,
        sum(combinations.points_redeemed) as points_redeemed,
        sum(combinations.acquisition_spend) as acquisition_spend,
        sum(combinations.regular_buyers) as regular_buyers,
        sum(combinations.overdue_regulars) as overdue_regulars
    from combinations
    cross join dimensions
    where dimensions.dimension = 'all' or combinations.has_customer
    group by 1, 2, 3

    union all
    select
        as_of_date,
        'channel' as dimension,
        channel as dimension_value,
        0 as cohort_size,
        0 as cohort_retained,
        0 as active_at_end,
        0 as new_customers,
        0 as reactivated_customers,
        0 as buyers_365d,
        0 as repeat_buyers_365d,
        0 as active_members,
        count(*) as orders,
        count(distinct customer_id) as ordering_customers,
        sum(amount) as net_revenue,
        0 as csat_responses,
        0 as csat_satisfied,
        0 as nps_responses,
        0 as nps_net_promoters,
        0 as complaints_opened,
        0 as complaints_responded,
        0 as complaints_closed,
        0 as closed_within_sla,
        0 as contacts,
        0 as contacts_responded,
        0 as points_earned,
        0 as points_redeemed,
        0 as acquisition_spend,
        0 as regular_buyers,
        0 as overdue_regulars
    from facts
    where kind = 'purchase'
    group by as_of_date, channel
),

aggregated as (
    select
        summed.*,
        complaint_medians.median_first_response,
        complaint_medians.median_resolution
    from summed
    left join complaint_medians
        on summed.as_of_date = complaint_medians.as_of_date
        and summed.dimension = complaint_medians.dimension
        and summed.dimension_value = complaint_medians.dimension_value
),

-- whether the source records complaints and marketing spend at all, by the day: a company
-- that keeps no complaints table has no complaint rate, which is not a rate of 0 (the
-- other KPIs on optional tables are null by their zero denominators already)
recorded as (
    select
        as_of.as_of_date,
        case when exists (
                    select 1 from complaints
                    where complaints.valid_from < as_of.as_of_end
                        and complaints.valid_to >= as_of.as_of_end
                        and complaints.opened_at < as_of.as_of_end
                ) then 1
            else 0
        end as has_complaints,
        case when exists (
                    select 1 from spend
                    where spend.valid_from < as_of.as_of_end
                        and spend.valid_to >= as_of.as_of_end
                        and spend.spend_date <= as_of.as_of_date
                ) then 1
            else 0
        end as has_spend
    from as_of
),

-- (kpi, numerator, denominator, scale); medians carry their count as denominator
kpi_rows as (
    select
        as_of_date,
        dimension,
        dimension_value,
        'active_customers' as kpi,
        cast(active_at_end as double precision) as numerator,
        cast(null as double precision) as denominator,
        cast(active_at_end as double precision) as value
    from aggregated
    where dimension <> 'channel'
    union all
    select
        as_of_date,
        dimension,
        dimension_value,
        'churn_rate' as kpi,
        cohort_size - cohort_retained as numerator,
        cohort_size as denominator,
        (cohort_size - cohort_retained) * 1.0 / nullif(cohort_size, 0) as value
    from aggregated
    where dimension <> 'channel'
    union all
    select
        as_of_date,
        dimension,
        dimension_value,
        'retention_rate' as kpi,
        cohort_retained as numerator,
        cohort_size as denominator,
        cohort_retained * 1.0 / nullif(cohort_size, 0) as value
    from aggregated
    where dimension <> 'channel'
    union all
    select
        as_of_date,
        dimension,
        dimension_value,
        'new_customers' as kpi,
        new_customers as numerator,
        null as denominator,
        new_customers as value
    from aggregated
    where dimension <> 'channel'
    union all
    select
        as_of_date,
        dimension,
        dimension_value,
        'reactivated_customers' as kpi,
        reactivated_customers as numerator,
        null as denominator,
        reactivated_customers as value
    from aggregated
    where dimension <> 'channel'
    union all
    select
        as_of_date,
        dimension,
        dimension_value,
        'completed_orders' as kpi,
        orders as numerator,
        null as denominator,
        orders as value
    from aggregated
    union all
    select
        as_of_date,
        dimension,
        dimension_value,
        'net_revenue' as kpi,
        net_revenue as numerator,
        null as denominator,
        net_revenue as value
    from aggregated
    union all
    select
        as_of_date,
        dimension,
        dimension_value,
        'repeat_purchase_rate' as kpi,
        repeat_buyers_365d as numerator,
        buyers_365d as denominator,
        repeat_buyers_365d * 1.0 / nullif(buyers_365d, 0) as value
    from aggregated
    where dimension <> 'channel'
    union all
    select
        as_of_date,
        dimension,
        dimension_value,
        'purchase_frequency' as kpi,
        orders as numerator,
        ordering_customers as denominator,
        orders * 1.0 / nullif(ordering_customers, 0) as value
    from aggregated
    union all
    select
        as_of_date,
        dimension,
        dimension_value,
        'aov' as kpi,
        net_revenue as numerator,
        orders as denominator,
        net_revenue / nullif(orders, 0) as value
    from aggregated
    union all
    select
        as_of_date,
        dimension,
        dimension_value,
        'csat' as kpi,
        csat_satisfied as numerator,
        csat_responses as denominator,
        100.0 * csat_satisfied / nullif(csat_responses, 0) as value
    from aggregated
    where dimension <> 'channel'
    union all
    select
        as_of_date,
        dimension,
        dimension_value,
        'nps' as kpi,
        nps_net_promoters as numerator,
        nps_responses as denominator,
        100.0 * nps_net_promoters / nullif(nps_responses, 0) as value
    from aggregated
    where dimension <> 'channel'
    union all
    select
        aggregated.as_of_date,
        aggregated.dimension,
        aggregated.dimension_value,
        'cac' as kpi,
        aggregated.acquisition_spend as numerator,
        aggregated.new_customers as denominator,
        case when recorded.has_spend = 1
                then aggregated.acquisition_spend / nullif(aggregated.new_customers, 0)
        end as value
    from aggregated
    inner join recorded on aggregated.as_of_date = recorded.as_of_date
    where aggregated.dimension = 'all'
    union all
    select
        aggregated.as_of_date,
        aggregated.dimension,
        aggregated.dimension_value,
        'complaints_per_1000_orders' as kpi,
        aggregated.complaints_opened as numerator,
        aggregated.orders as denominator,
        case when recorded.has_complaints = 1
                then 1000.0 * aggregated.complaints_opened / nullif(aggregated.orders, 0)
        end as value
    from aggregated
    inner join recorded on aggregated.as_of_date = recorded.as_of_date
    where aggregated.dimension <> 'channel'
    union all
    select
        as_of_date,
        dimension,
        dimension_value,
        'complaint_first_response_hours' as kpi,
        null as numerator,
        complaints_responded as denominator,
        median_first_response as value
    from aggregated
    where dimension <> 'channel'
    union all
    select
        as_of_date,
        dimension,
        dimension_value,
        'complaint_resolution_hours' as kpi,
        null as numerator,
        complaints_closed as denominator,
        median_resolution as value
    from aggregated
    where dimension <> 'channel'
    union all
    select
        as_of_date,
        dimension,
        dimension_value,
        'complaint_sla_rate' as kpi,
        closed_within_sla as numerator,
        complaints_closed as denominator,
        closed_within_sla * 1.0 / nullif(complaints_closed, 0) as value
    from aggregated
    where dimension <> 'channel'
    union all
    select
        as_of_date,
        dimension,
        dimension_value,
        'campaign_response_rate' as kpi,
        contacts_responded as numerator,
        contacts as denominator,
        contacts_responded * 1.0 / nullif(contacts, 0) as value
    from aggregated
    where dimension <> 'channel'
    union all
    select
        as_of_date,
        dimension,
        dimension_value,
        'loyalty_member_share' as kpi,
        active_members as numerator,
        active_at_end as denominator,
        active_members * 1.0 / nullif(active_at_end, 0) as value
    from aggregated
    where dimension <> 'channel'
    union all
    select
        as_of_date,
        dimension,
        dimension_value,
        'points_redemption_rate' as kpi,
        points_redeemed as numerator,
        points_earned as denominator,
        points_redeemed / nullif(points_earned, 0) as value
    from aggregated
    where dimension <> 'channel'
    union all
    select
        as_of_date,
        dimension,
        dimension_value,
        'overdue_regulars' as kpi,
        overdue_regulars as numerator,
        regular_buyers as denominator,
        overdue_regulars * 1.0 / nullif(regular_buyers, 0) as value
    from aggregated
    where dimension <> 'channel'
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
