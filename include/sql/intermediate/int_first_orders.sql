-- grain: one row per customer with a completed order version valid on every day from build_from to build_to: the earliest order date among those versions (built once per snapshot build; int_customers adds the versions stable over its chunk only)
with completed as (
    select * from int_completed_orders
),

final as (
    select
        customer_id,
        min(order_date) as first_order_date
    from completed
    where is_build_stable
    group by customer_id
)

select * from final
