-- grain: one row per as_of_date and customer known by the end of as_of_date (created by then, or with a completed purchase by then), with their attributes then and their first completed purchase ever
with as_of as (
    select * from as_of_dates
),

customer_versions as (
    select * from staging.stg_customers
),

order_versions as (
    select * from staging.stg_orders
),

customers_at_day as (
    select
        as_of.as_of_date,
        customer_versions.customer_id,
        customer_versions.created_at,
        customer_versions.region,
        customer_versions.loyalty_member
    from as_of
    inner join customer_versions
        on customer_versions.valid_from < as_of.as_of_end
        and customer_versions.valid_to >= as_of.as_of_end
),

first_purchases as (
    select
        as_of.as_of_date,
        order_versions.customer_id,
        min(cast(order_versions.ordered_at as date)) as first_purchase_date
    from as_of
    inner join order_versions
        on order_versions.valid_from < as_of.as_of_end
        and order_versions.valid_to >= as_of.as_of_end
        and order_versions.ordered_at < as_of.as_of_end
    where order_versions.status = 'completed'
    group by as_of.as_of_date, order_versions.customer_id
),

-- a customer who bought by the day exists by then, whatever created_at says
final as (
    select
        customers_at_day.as_of_date,
        customers_at_day.customer_id,
        customers_at_day.region,
        customers_at_day.loyalty_member,
        first_purchases.first_purchase_date
    from customers_at_day
    inner join as_of
        on customers_at_day.as_of_date = as_of.as_of_date
    left join first_purchases
        on customers_at_day.as_of_date = first_purchases.as_of_date
        and customers_at_day.customer_id = first_purchases.customer_id
    where customers_at_day.created_at < as_of.as_of_end
        or first_purchases.first_purchase_date is not null
)

select * from final
