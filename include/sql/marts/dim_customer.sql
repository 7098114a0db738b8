-- grain: one row per customer known at the end of as_of_date (created by then, or with an order by then), with what is known of them then
with customer_versions as (
    select * from staging.stg_customers
    where valid_from < {{ as_of_end }}
        and valid_to >= {{ as_of_end }}
),

orders as (
    select * from marts.fct_orders
),

customers as (
    select * from customer_versions
    where created_at < {{ as_of_end }}
        or customer_id in (select orders.customer_id from orders)
),

purchases as (
    select * from orders
    where is_purchase
),

segments as (
    select
        customer_id,
        segment
    from marts.customer_rfm
    where as_of_date = {{ as_of_date }}
),

tiers as (
    select
        customer_id,
        tier
    from marts.customer_value_tier
    where as_of_date = {{ as_of_date }}
),

-- the latest CLV the model gate let through, on or before the day (a night whose CLV
-- was held keeps the one before it; clv_as_of_date says which)
clv as (
    select
        customer_id,
        clv,
        as_of_date as clv_as_of_date
    from marts.customer_clv
    where as_of_date = (
            select max(latest.as_of_date) from marts.customer_clv as latest
            where latest.as_of_date <= {{ as_of_date }}
        )
),

purchase_summary as (
    select
        customer_id,
        min(order_date) as first_order_date,
        max(order_date) as last_order_date,
        count(*) as completed_orders,
        sum(net_amount) as net_revenue,
        sum(margin_amount) as margin_amount
    from purchases
    group by customer_id
),

final as (
    select
        customers.customer_id,
        customers.created_at,
        purchase_summary.first_order_date,
        purchase_summary.last_order_date,
        coalesce(purchase_summary.completed_orders, 0) as completed_orders,
        coalesce(purchase_summary.net_revenue, 0) as net_revenue,
        coalesce(purchase_summary.margin_amount, 0) as margin_amount,
        customers.city,
        customers.region,
        customers.acquisition_channel,
        customers.birth_year,
        customers.gender,
        customers.income_band,
        customers.loyalty_member,
        customers.loyalty_tier,
        segments.segment,
        tiers.tier,
        clv.clv,
        clv.clv_as_of_date,
        {{ as_of_date }} as as_of_date
    from customers
    left join purchase_summary
        on customers.customer_id = purchase_summary.customer_id
    left join segments
        on customers.customer_id = segments.customer_id
    left join tiers
        on customers.customer_id = tiers.customer_id
    left join clv
        on customers.customer_id = clv.customer_id
)

select * from final
