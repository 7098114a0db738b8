-- grain: one row per customer active at as_of_date (a completed purchase in the 90 days ending at as_of_date), with churn features from what was known at the end of as_of_date only
with orders as not materialized (
    select * from model_orders
),

customer_versions as (
    select * from staging.stg_customers
    where valid_from < {{ as_of_end }}
        and valid_to >= {{ as_of_end }}
),

complaint_versions as (
    select * from staging.stg_complaints
    where valid_from < {{ as_of_end }}
        and valid_to >= {{ as_of_end }}
        and opened_at < {{ as_of_end }}
        and opened_at >= {{ as_of_end }} - 365 * interval '1 day'
),

survey_versions as (
    select * from staging.stg_surveys
    where valid_from < {{ as_of_end }}
        and valid_to >= {{ as_of_end }}
        and responded_at < {{ as_of_end }}
        and responded_at >= {{ as_of_end }} - 365 * interval '1 day'
),

contact_versions as (
    select * from staging.stg_campaign_contacts
    where valid_from < {{ as_of_end }}
        and valid_to >= {{ as_of_end }}
        and contacted_at < {{ as_of_end }}
        and contacted_at >= {{ as_of_end }} - 180 * interval '1 day'
),

loyalty_versions as (
    select * from staging.stg_loyalty_events
    where valid_from < {{ as_of_end }}
        and valid_to >= {{ as_of_end }}
        and occurred_at < {{ as_of_end }}
        and occurred_at >= {{ as_of_end }} - 365 * interval '1 day'
),

interaction_versions as (
    select * from staging.stg_interactions
    where valid_from < {{ as_of_end }}
        and valid_to >= {{ as_of_end }}
        and occurred_at < {{ as_of_end }}
        and occurred_at >= {{ as_of_end }} - 90 * interval '1 day'
),

-- same-day orders merged: a purchase day is one row, so no distinct count is needed
purchase_days as (
    select * from model_purchase_days
),

purchase_history as (
    select
        customer_id,
        min(order_date) as first_order_date,
        max(order_date) as last_order_date,
        count(*) as purchase_days,
        sum(n_orders) as orders_total,
        sum(case when order_date > {{ as_of_date }} - 30 then n_orders else 0 end) as orders_30,
        sum(case when order_date > {{ as_of_date }} - 90 then n_orders else 0 end) as orders_90,
        sum(case when order_date > {{ as_of_date }} - 180 and order_date <= {{ as_of_date }} - 90
                then n_orders
            else 0
        end) as orders_prev_90,
        sum(case when order_date > {{ as_of_date }} - 365 then n_orders else 0 end) as orders_365,
        sum(case when order_date > {{ as_of_date }} - 90 then net_amount else 0 end) as spend_90,
        sum(case when order_date > {{ as_of_date }} - 180 and order_date <= {{ as_of_date }} - 90
                then net_amount
            else 0
        end) as spend_prev_90,
        sum(case when order_date > {{ as_of_date }} - 365 then net_amount else 0 end) as spend_365,
        sum(case when order_date > {{ as_of_date }} - 365 then margin_amount else 0 end)
            as margin_365
    from purchase_days
    group by customer_id
),

active as (
    select * from purchase_history
    where last_order_date > {{ as_of_date }} - 90
),

channel_counts as (
    select
        customer_id,
        channel,
        count(*) as n_orders
    from orders
    where order_date > {{ as_of_date }} - 365
    group by customer_id, channel
),

ranked_channels as (
    select
        channel_counts.*,
        row_number()
            over (
                partition by channel_counts.customer_id
                order by channel_counts.n_orders desc, channel_counts.channel asc
            )
            as channel_no,
        count(*) over (partition by channel_counts.customer_id) as n_channels
    from channel_counts
),

main_channels as (
    select
        customer_id,
        channel as main_channel,
        n_channels
    from ranked_channels
    where channel_no = 1
),

-- value tier by 12-month margin, as in marts.customer_value_tier, but at this cut-off
tier_ranked as (
    select
        customer_id,
        row_number() over (order by margin_365 desc, spend_365 desc, customer_id asc) as tier_rank,
        count(*) over () as tier_base
    from purchase_history
    where orders_365 > 0
),

tiers as (
    select
        customer_id,
        case
            when 100 * (tier_rank - 1) < {{ vip_cum_pct }} * tier_base then 'vip'
            when 100 * (tier_rank - 1) < {{ key_cum_pct }} * tier_base then 'key'
            when 100 * (tier_rank - 1) < {{ regular_cum_pct }} * tier_base then 'regular'
            else 'small'
        end as value_tier
    from tier_ranked
),

-- a step reached after the cut-off is not known at the cut-off, even if the row says so
complaint_steps as (
    select
        customer_id,
        opened_at,
        severity,
        case when first_response_at < {{ as_of_end }} then first_response_at end
            as first_response_at,
        case when closed_at < {{ as_of_end }} then closed_at end as closed_at
    from complaint_versions
),

complaint_stats as (
    select
        customer_id,
        sum(case when opened_at >= {{ as_of_end }} - 90 * interval '1 day' then 1 else 0 end)
            as complaints_90,
        count(*) as complaints_365,
        sum(case when severity = 'high' then 1 else 0 end) as high_severity_complaints_365,
        sum(case when closed_at is null then 1 else 0 end) as open_complaints,
        avg(extract(epoch from (coalesce(first_response_at, {{ as_of_end }}) - opened_at)) / 3600.0)
            as complaint_response_hours,
        avg(extract(epoch from (coalesce(closed_at, {{ as_of_end }}) - opened_at)) / 3600.0)
            as complaint_resolution_hours
    from complaint_steps
    group by customer_id
),

ranked_surveys as (
    select
        customer_id,
        survey_type,
        score,
        cast(responded_at as date) as response_date,
        row_number() over (
            partition by customer_id, survey_type order by responded_at desc, response_id desc
        ) as recent_no
    from survey_versions
),

survey_stats as (
    select
        customer_id,
        max(case when survey_type = 'csat' and recent_no = 1 then score end) as last_csat,
        max(case when survey_type = 'csat' and recent_no = 1
                then {{ as_of_date }} - response_date
        end) as days_since_csat,
        avg(case when survey_type = 'csat' then score end) as csat_avg_365,
        max(case when survey_type = 'nps' and recent_no = 1 then score end) as last_nps,
        max(case when survey_type = 'nps' and recent_no = 1
                then {{ as_of_date }} - response_date
        end) as days_since_nps
    from ranked_surveys
    group by customer_id
),

contact_stats as (
    select
        customer_id,
        count(*) as campaign_contacts_180,
        sum(case when responded_at < {{ as_of_end }} then 1 else 0 end) as campaign_responses_180
    from contact_versions
    group by customer_id
),

loyalty_stats as (
    select
        customer_id,
        sum(case when kind = 'earn' and occurred_at >= {{ as_of_end }} - 90 * interval '1 day'
                then points
            else 0
        end) as points_earned_90,
        sum(case when kind = 'redeem' and occurred_at >= {{ as_of_end }} - 90 * interval '1 day'
                then points
            else 0
        end) as points_redeemed_90,
        {{ as_of_date }} - max(case when kind in ('earn', 'redeem')
                then cast(occurred_at as date)
        end) as days_since_loyalty_activity
    from loyalty_versions
    group by customer_id
),

interaction_stats as (
    select
        customer_id,
        sum(case when direction = 'inbound' then 1 else 0 end) as inbound_contacts_90,
        sum(case when direction = 'outbound' then 1 else 0 end) as outbound_contacts_90
    from interaction_versions
    group by customer_id
),

final as (
    select
        active.customer_id,
        cast({{ as_of_date }} - active.last_order_date as double precision) as recency_days,
        cast({{ as_of_date }} - active.first_order_date as double precision) as tenure_days,
        cast({{ as_of_date }} - cast(customer_versions.created_at as date) as double precision)
            as account_age_days,
        cast(case when active.purchase_days > 1
                then 1.0
                    * (active.last_order_date - active.first_order_date)
                    / (active.purchase_days - 1)
        end as double precision) as usual_gap_days,
        cast(active.orders_total as double precision) as orders_total,
        cast(active.orders_30 as double precision) as orders_30,
        cast(active.orders_90 as double precision) as orders_90,
        cast(active.orders_prev_90 as double precision) as orders_prev_90,
        cast(active.orders_365 as double precision) as orders_365,
        cast(active.spend_90 as double precision) as spend_90,
        cast(active.spend_prev_90 as double precision) as spend_prev_90,
        cast(active.spend_365 as double precision) as spend_365,
        cast(active.margin_365 as double precision) as margin_365,
        cast(active.spend_365 / active.orders_365 as double precision) as avg_order_value_365,
        main_channels.main_channel,
        cast(main_channels.n_channels as double precision) as n_channels_365,
        tiers.value_tier,
        cast(coalesce(complaint_stats.complaints_90, 0) as double precision) as complaints_90,
        cast(coalesce(complaint_stats.complaints_365, 0) as double precision) as complaints_365,
        cast(coalesce(complaint_stats.high_severity_complaints_365, 0) as double precision)
            as high_severity_complaints_365,
        cast(coalesce(complaint_stats.open_complaints, 0) as double precision) as open_complaints,
        cast(complaint_stats.complaint_response_hours as double precision)
            as complaint_response_hours,
        cast(complaint_stats.complaint_resolution_hours as double precision)
            as complaint_resolution_hours,
        cast(survey_stats.last_csat as double precision) as last_csat,
        cast(survey_stats.days_since_csat as double precision) as days_since_csat,
        cast(survey_stats.csat_avg_365 as double precision) as csat_avg_365,
        cast(survey_stats.last_nps as double precision) as last_nps,
        cast(survey_stats.days_since_nps as double precision) as days_since_nps,
        cast(coalesce(contact_stats.campaign_contacts_180, 0) as double precision)
            as campaign_contacts_180,
        cast(coalesce(contact_stats.campaign_responses_180, 0) as double precision)
            as campaign_responses_180,
        cast(case when customer_versions.loyalty_member then 1 else 0 end as double precision)
            as loyalty_member,
        cast(coalesce(loyalty_stats.points_earned_90, 0) as double precision) as points_earned_90,
        cast(coalesce(loyalty_stats.points_redeemed_90, 0) as double precision)
            as points_redeemed_90,
        cast(loyalty_stats.days_since_loyalty_activity as double precision)
            as days_since_loyalty_activity,
        cast(coalesce(interaction_stats.inbound_contacts_90, 0) as double precision)
            as inbound_contacts_90,
        cast(coalesce(interaction_stats.outbound_contacts_90, 0) as double precision)
            as outbound_contacts_90,
        customer_versions.region,
        customer_versions.acquisition_channel
    from active
    left join customer_versions
        on active.customer_id = customer_versions.customer_id
    left join main_channels
        on active.customer_id = main_channels.customer_id
    left join tiers
        on active.customer_id = tiers.customer_id
    left join complaint_stats
        on active.customer_id = complaint_stats.customer_id
    left join survey_stats
        on active.customer_id = survey_stats.customer_id
    left join contact_stats
        on active.customer_id = contact_stats.customer_id
    left join loyalty_stats
        on active.customer_id = loyalty_stats.customer_id
    left join interaction_stats
        on active.customer_id = interaction_stats.customer_id
)

select * from final
