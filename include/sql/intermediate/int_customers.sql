-- grain: one row per as_of_date and customer known by the end of as_of_date (created by then, or with a completed purchase by then), with their attributes then and their first completed purchase ever
with as_of as (
    select * from as_of_dates
),

customer_versions as (
    select * from staging.stg_customers
),

order_versions as (
    select * from int_order_versions
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

-- the first completed purchase valid at the day: the earliest of the versions valid on
-- every day of the spine, if placed by the day, or of those that change inside it. The
-- versions valid over the whole build were reduced to one date per customer once
-- (int_first_orders); only those valid over this chunk alone are read again here
stable_first as (
    select
        customer_id,
        min(first_order_date) as first_order_date
    from (
        select
            customer_id,
            first_order_date
        from int_first_orders
        union all
        select
            customer_id,
            order_date
        from order_versions
        where is_stable and not is_build_stable
    ) as candidates
    group by customer_id
),

changing_first as (
    select
        as_of.as_of_date,
        order_versions.customer_id,
        min(order_versions.order_date) as first_order_date
    from as_of
    inner join order_versions
        on order_versions.first_valid_day <= as_of.as_of_date
        and order_versions.last_valid_day >= as_of.as_of_date
        and order_versions.order_date <= as_of.as_of_date
    where not order_versions.is_stable
    group by as_of.as_of_date, order_versions.customer_id
),

-- a customer who bought by the day exists by then, whatever created_at says
with_first_purchase as (
    select
        customers_at_day.*,
        least(
            case when stable_first.first_order_date <= customers_at_day.as_of_date
                    then stable_first.first_order_date
            end,
            changing_first.first_order_date
        ) as first_purchase_date
    from customers_at_day
    left join stable_first
        on customers_at_day.customer_id = stable_first.customer_id
    left join changing_first
        on customers_at_day.as_of_date = changing_first.as_of_date
        and customers_at_day.customer_id = changing_first.customer_id
),

final as (
    select
        with_first_purchase.as_of_date,
        with_first_purchase.customer_id,
        with_first_purchase.region,
        with_first_purchase.loyalty_member,
        with_first_purchase.first_purchase_date
    from with_first_purchase
    inner join as_of
        on with_first_purchase.as_of_date = as_of.as_of_date
    where with_first_purchase.created_at < as_of.as_of_end
        or with_first_purchase.first_purchase_date is not null
)

select * from final
