-- grain: one row per as_of_date and customer with a completed purchase in the 365 days ending at as_of_date, in the state at the end of as_of_date: the purchase windows the snapshot marts read
with as_of as (
    select
        as_of_date,
        as_of_date - date '1900-01-01' as day_no
    from as_of_dates
),

order_versions as (
    select * from int_order_versions
),

-- versions valid on every day of the spine: their windows are frames over the order dates,
-- so the work grows with orders and customer days, not with orders times days
stable_orders as (
    select
        customer_id,
        order_date - date '1900-01-01' as day_no,
        1 as orders,
        net_amount,
        margin_amount
    from order_versions
    where is_stable
        and order_date > {{ date_from }} - 365
),

-- versions that become or stop being valid inside the spine (the orders changed in these
-- days: few), counted day by day
changing_orders as (
    select
        as_of.as_of_date,
        order_versions.customer_id,
        order_versions.order_date,
        order_versions.net_amount,
        order_versions.margin_amount
    from as_of
    inner join order_versions
        on order_versions.first_valid_day <= as_of.as_of_date
        and order_versions.last_valid_day >= as_of.as_of_date
        and order_versions.order_date <= as_of.as_of_date
        and order_versions.order_date > as_of.as_of_date - 365
    where not order_versions.is_stable
),

changing_windows as (
    select
        as_of_date,
        customer_id,
        count(*) as orders_365d,
        sum(net_amount) as revenue_365d,
        sum(margin_amount) as margin_365d,
        sum(case when order_date > as_of_date - {{ rfm_lookback_days }} then 1 else 0 end)
            as orders_rfm,
        sum(case when order_date > as_of_date - {{ rfm_lookback_days }} then net_amount
            else 0 end) as net_rfm,
        max(case when order_date > as_of_date - {{ rfm_lookback_days }} then order_date end)
            as last_order_rfm,
        sum(case when order_date > as_of_date - 90 then 1 else 0 end) as orders_90d,
        sum(case when order_date between as_of_date - 119 and as_of_date - 30 then 1 else 0 end)
            as orders_start
    from changing_orders
    group by as_of_date, customer_id
),

customers as (
    select customer_id from stable_orders
    union
    select customer_id from changing_orders
),

-- each customer's stable orders and one row per day of the spine, in day order
series as (
    select customer_id, day_no, orders, net_amount, margin_amount, 0 as is_day
    from stable_orders
    union all
    select customers.customer_id, as_of.day_no, 0, 0, 0, 1
    from customers
    cross join as_of
),

windowed as (
    select
        customer_id,
        day_no,
        is_day,
        sum(orders) over w_365 as orders_365d,
        sum(net_amount) over w_365 as revenue_365d,
        sum(margin_amount) over w_365 as margin_365d,
        sum(orders) over w_rfm as orders_rfm,
        sum(net_amount) over w_rfm as net_rfm,
        max(case when orders = 1 then day_no end) over w_rfm as last_order_day_rfm,
        sum(orders) over w_90 as orders_90d,
        sum(orders) over w_start as orders_start
    from series
    window
        w_365 as (partition by customer_id order by day_no
            range between 364 preceding and current row),
        w_rfm as (partition by customer_id order by day_no
            range between {{ rfm_frame_days }} preceding and current row),
        w_90 as (partition by customer_id order by day_no
            range between 89 preceding and current row),
        w_start as (partition by customer_id order by day_no
            range between 119 preceding and 30 preceding)
),

combined as (
    select
        as_of.as_of_date,
        windowed.customer_id,
        cast(windowed.orders_365d + coalesce(changing_windows.orders_365d, 0) as bigint)
            as purchases_365d,
        windowed.revenue_365d + coalesce(changing_windows.revenue_365d, 0) as revenue_12m,
        windowed.margin_365d + coalesce(changing_windows.margin_365d, 0) as margin_12m,
        cast(windowed.orders_rfm + coalesce(changing_windows.orders_rfm, 0) as bigint)
            as orders_rfm,
        windowed.net_rfm + coalesce(changing_windows.net_rfm, 0) as net_rfm,
        greatest(
            date '1900-01-01' + cast(windowed.last_order_day_rfm as integer),
            changing_windows.last_order_rfm
        ) as last_order_date_rfm,
        windowed.orders_90d + coalesce(changing_windows.orders_90d, 0) as orders_90d,
        windowed.orders_start + coalesce(changing_windows.orders_start, 0) as orders_start
    from windowed
    inner join as_of
        on windowed.day_no = as_of.day_no
    left join changing_windows
        on as_of.as_of_date = changing_windows.as_of_date
        and windowed.customer_id = changing_windows.customer_id
    where windowed.is_day = 1
),

final as (
    select
        as_of_date,
        customer_id,
        purchases_365d,
        revenue_12m,
        margin_12m,
        orders_rfm,
        net_rfm,
        last_order_date_rfm,
        case when orders_90d > 0 then 1 else 0 end as active_at_end,
        case when orders_start > 0 then 1 else 0 end as active_at_start
    from combined
    where purchases_365d > 0
)

select * from final
