-- grain: one row per version of a completed order that is valid at the end of some day from build_from to build_to and was placed by the last of them (built once per snapshot build; int_order_versions narrows it to each chunk)
with order_versions as (
    select * from staging.stg_orders
),

-- a version is valid at the end of day d when valid_from < d + 1 and valid_to >= d + 1
-- (transform/staging.py): from the day of valid_from to the day before valid_to
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

-- stable over the build: valid on every one of its days (what int_first_orders reads)
final as (
    select
        completed.*,
        completed.first_valid_day <= {{ build_from }}
        and completed.last_valid_day >= {{ build_to }} as is_build_stable
    from completed
    where completed.first_valid_day <= {{ build_to }}
        and completed.last_valid_day >= {{ build_from }}
        and completed.order_date <= {{ build_to }}
)

select * from final
