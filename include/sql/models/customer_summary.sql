-- grain: one row per customer with a completed purchase up to the end of as_of_date: the CLV models' sufficient statistics, purchases on the same day merged into one
with purchase_days as (
    select * from model_purchase_days
),

numbered as (
    select
        purchase_days.*,
        row_number()
            over (partition by purchase_days.customer_id order by purchase_days.order_date)
            as day_no
    from purchase_days
),

per_customer as (
    select
        customer_id,
        count(*) - 1 as frequency,
        max(order_date) - min(order_date) as recency,
        {{ as_of_date }} - min(order_date) as t,
        sum(case when day_no > 1 then net_amount else 0 end) as repeat_value,
        sum(net_amount) as historic_value,
        sum(margin_amount) as historic_margin,
        sum(n_orders) as n_orders,
        min(order_date) as first_order_date,
        max(order_date) as last_order_date
    from numbered
    group by customer_id
),

final as (
    select
        customer_id,
        cast(frequency as integer) as frequency,
        cast(recency as integer) as recency,
        cast(t as integer) as t,
        cast(case when frequency > 0 then repeat_value / frequency else 0 end as double precision)
            as monetary_value,
        cast(historic_value as double precision) as historic_value,
        cast(historic_margin as double precision) as historic_margin,
        cast(n_orders as integer) as n_orders,
        first_order_date,
        last_order_date
    from per_customer
)

select * from final
