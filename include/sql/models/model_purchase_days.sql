-- grain: one row per customer and day with a completed purchase up to the end of as_of_date (same-day orders merged): the unit of purchase of the CLV summary and the churn features
with orders as (
    select * from model_orders
),

final as (
    select
        customer_id,
        order_date,
        count(*) as n_orders,
        sum(net_amount) as net_amount,
        sum(margin_amount) as margin_amount
    from orders
    group by customer_id, order_date
)

select * from final
