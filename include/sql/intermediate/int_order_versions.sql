-- grain: one row per version of a completed order that is valid at the end of some day of the spine (as_of_dates) and was placed by its last day
with as_of as (
    select
        min(as_of_date) as date_from,
        max(as_of_date) as date_to
    from as_of_dates
),

completed as (
    select * from int_completed_orders
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
