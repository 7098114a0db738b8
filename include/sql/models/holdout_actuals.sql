-- grain: one row per customer with a completed purchase in (holdout_from, as_of_date], as known at the end of as_of_date: actual purchase days (same-day orders merged) for the CLV holdout check
with orders as (
    select * from model_orders
    where order_date > {{ holdout_from }}
        and order_date <= {{ as_of_date }}
),

final as (
    select
        customer_id,
        cast(count(distinct order_date) as integer) as actual_purchases
    from orders
    group by customer_id
)

select * from final
