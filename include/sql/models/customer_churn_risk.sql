-- grain: one row per as_of_date and customer active at as_of_date (a completed purchase in the 90 days ending at it): calibrated churn probability, risk band and top reasons, as published by the nightly models stage
with scores as (
    select * from churn_scores_next
),

final as (
    select
        {{ as_of_date }} as as_of_date,
        customer_id,
        cast(churn_probability as double precision) as churn_probability,
        risk_band,
        top_reasons,
        model_version,
        run_id
    from scores
)

select * from final
