-- Where the value pyramid (past 12-month margin) and predicted CLV disagree, on the latest published day:
-- rising stars (small or regular tier, but in the top 5 percent by CLV) and fading VIPs (vip or key tier,
-- but in the bottom half by CLV or probably no longer buying: P(alive) below 0.5).
with latest as (
    select max(as_of_date) as as_of_date from marts.customer_clv
),

clv as (
    select marts_clv.*
    from marts.customer_clv as marts_clv
    inner join latest on marts_clv.as_of_date = latest.as_of_date
),

tiers as (
    select value_tier.*
    from marts.customer_value_tier as value_tier
    inner join latest on value_tier.as_of_date = latest.as_of_date
),

churn_risk as (
    select churn.*
    from marts.customer_churn_risk as churn
    inner join latest on churn.as_of_date = latest.as_of_date
),

-- both rankings over the same base: the customers with a tier (a purchase in 12 months)
ranked as (
    select
        tiers.as_of_date,
        tiers.customer_id,
        tiers.tier,
        tiers.rank as tier_rank,
        tiers.margin_12m,
        clv.clv,
        clv.p_alive,
        clv.expected_purchases,
        row_number() over (order by clv.clv desc, tiers.customer_id) as clv_rank,
        count(*) over () as base_size
    from tiers
    inner join clv on tiers.customer_id = clv.customer_id
),

flagged as (
    select
        ranked.*,
        case
            when tier in ('small', 'regular') and 100 * (clv_rank - 1) < 5 * base_size
                then 'rising star'
            when tier in ('vip', 'key')
                and (100 * (clv_rank - 1) >= 50 * base_size or p_alive < 0.5)
                then 'fading VIP'
        end as disagreement
    from ranked
),

final as (
    select
        flagged.disagreement,
        flagged.customer_id,
        flagged.tier,
        flagged.tier_rank,
        flagged.margin_12m,
        flagged.clv_rank,
        flagged.clv,
        flagged.p_alive,
        flagged.expected_purchases,
        churn_risk.churn_probability,
        churn_risk.risk_band,
        flagged.as_of_date
    from flagged
    left join churn_risk on flagged.customer_id = churn_risk.customer_id
    where flagged.disagreement is not null
)

select * from final order by disagreement desc, clv_rank
