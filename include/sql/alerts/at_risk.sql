-- grain: one row per customer of the watched tiers on {{ d }} whose latest published scores say they are at risk: a high churn probability, or P(alive) fallen steeply over the lookback
with tiered as (
    select
        customer_id,
        tier
    from marts.customer_value_tier
    where as_of_date = {{ d }}
        and tier in {{ tiers }}
),

risk as (
    select
        customer_id,
        churn_probability,
        risk_band,
        top_reasons
    from marts.customer_churn_risk
    where as_of_date = {{ risk_d }}
),

value_now as (
    select
        customer_id,
        clv,
        p_alive
    from marts.customer_clv
    where as_of_date = {{ clv_d }}
),

value_before as (
    select
        customer_id,
        p_alive as p_alive_before
    from marts.customer_clv
    where as_of_date = {{ before }}
),

scored as (
    select
        tiered.customer_id,
        tiered.tier,
        risk.churn_probability,
        risk.risk_band,
        risk.top_reasons,
        value_now.clv,
        value_now.p_alive,
        value_before.p_alive_before
    from tiered
    left join risk on tiered.customer_id = risk.customer_id
    left join value_now on tiered.customer_id = value_now.customer_id
    left join value_before on tiered.customer_id = value_before.customer_id
),

flagged as (
    select
        *,
        coalesce(
            churn_probability >= {{ min_churn }} or risk_band = 'high', false
        ) as is_high,
        coalesce(p_alive_before - p_alive >= {{ p_alive_drop }}, false) as is_falling
    from scored
),

final as (
    select
        customer_id,
        tier,
        churn_probability,
        risk_band,
        top_reasons,
        clv,
        p_alive,
        p_alive_before
    from flagged
    where is_high or is_falling
)

select * from final
