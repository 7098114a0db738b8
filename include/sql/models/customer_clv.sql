-- grain: one row per as_of_date and customer with a completed purchase up to the end of as_of_date: BG/NBD + Gamma-Gamma inputs (days) and predictions, as published by the nightly models stage
with scores as (
    select * from clv_scores_next
),

final as (
    select
        {{ as_of_date }} as as_of_date,
        customer_id,
        cast(frequency as integer) as frequency,
        cast(recency as integer) as recency,
        cast(t as integer) as t,
        cast(monetary_value as decimal(14, 2)) as monetary_value,
        cast(p_alive as double precision) as p_alive,
        cast(expected_purchases as double precision) as expected_purchases,
        cast(expected_avg_value as decimal(14, 2)) as expected_avg_value,
        cast(margin_ratio as double precision) as margin_ratio,
        cast(clv as decimal(14, 2)) as clv,
        cast(historic_value as decimal(14, 2)) as historic_value,
        cast(historic_margin as decimal(14, 2)) as historic_margin,
        cast(horizon_days as integer) as horizon_days,
        model_version,
        run_id
    from scores
)

select * from final
