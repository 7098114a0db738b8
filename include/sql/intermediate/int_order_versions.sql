-- grain: one row per version of a completed order that is valid at the end of some day of the spine (as_of_dates) and was placed by its last day
with as_of as (
    select
        min(as_of_date) as date_from,
        max(as_of_date) as date_to
    from as_of_dates
),

order_versions as (
    select * from staging.stg_orders
),

-- a version is valid at the end of day d when valid_from < d + 1 and valid_to >= d + 1
-- (transform.py): from the day of valid_from to the day before valid_to
completed as (
    select
        customer_id,
        order_id,
        cast(ordered_at as date) as order_date,
        cast(valid_from as date) as first_valid_day,
        cast(valid_to as date) - 1 as last_valid_day,
        channel,
        net_amount,
        net_amount - cost_amount as margin_amount
    from order_versions
    where status = 'completed'
),

-- stable: valid on every day of the spine, so only its order date decides where it counts
final as (
    select
        completed.*,
        completed.first_valid_day <= as_of.date_from
        and completed.last_valid_day >= as_of.date_to as is_stable
    from completed
    cross join as_of
    where completed.first_valid_day <= as_of.date_to
        and completed.last_valid_day >= as_of.date_from
        and completed.order_date <= as_of.date_to
)

select * from final
