-- grain: one row per as_of_date and completed order placed in the {{ lookback_days }} days ending at as_of_date, in its state at the end of as_of_date
with as_of as (
    select * from as_of_dates
),

order_versions as (
    select * from staging.stg_orders
),

valid_at_day as (
    select
        as_of.as_of_date,
        order_versions.*
    from as_of
    inner join order_versions
        on order_versions.valid_from < as_of.as_of_end
        and order_versions.valid_to >= as_of.as_of_end
        and order_versions.ordered_at < as_of.as_of_end
        and order_versions.ordered_at >= as_of.as_of_end - {{ lookback_days }} * interval '1 day'
),

final as (
    select
        as_of_date,
        order_id,
        customer_id,
        cast(ordered_at as date) as order_date,
        channel,
        net_amount,
        net_amount - cost_amount as margin_amount
    from valid_at_day
    where status = 'completed'
)

select * from final
