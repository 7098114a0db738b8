-- grain: one row per as_of_date and customer with a completed purchase in the 365 days ending at as_of_date, in the state at the end of as_of_date: the purchase windows the snapshot marts read
with as_of as (
    select as_of_date from as_of_dates
),

order_versions as (
    select * from int_order_versions
),

-- versions valid on every day of the spine: only their order date decides in which of a
-- day's windows they count (365 days, the RFM lookback, 90 days, d-119 .. d-30)
stable_orders as (
    select
        customer_id,
        order_date,
        net_amount,
        margin_amount
    from order_versions
    where is_stable
        and order_date > {{ date_from }} - 365
),

-- the orders inside a window on every day of the spine, summed once per customer (on a
-- one-day spine that is all of them: a night is one pass over the year's orders)
stable_core as (
    select
        customer_id,
        sum(case when order_date between {{ date_to }} - 364 and {{ date_from }} then 1 else 0 end)
            as orders_365d,
        sum(case when order_date between {{ date_to }} - 364 and {{ date_from }}
                then net_amount
            else 0
        end) as revenue_365d,
        sum(case when order_date between {{ date_to }} - 364 and {{ date_from }}
                then margin_amount
            else 0
        end) as margin_365d,
        sum(case when order_date between {{ date_to }} - {{ rfm_frame_days }} and {{ date_from }}
                then 1
            else 0
        end) as orders_rfm,
        sum(case when order_date between {{ date_to }} - {{ rfm_frame_days }} and {{ date_from }}
                then net_amount
            else 0
        end) as net_rfm,
        max(case when order_date between {{ date_to }} - {{ rfm_frame_days }} and {{ date_from }}
                then order_date
        end) as last_order_rfm,
        sum(case when order_date between {{ date_to }} - 89 and {{ date_from }} then 1 else 0 end)
            as orders_90d,
        sum(case when order_date between {{ date_to }} - 119 and {{ date_from }} - 30
                then 1
            else 0
        end) as orders_start
    from stable_orders
    group by customer_id
),

-- the orders that enter or leave a window inside the spine, day by day (a few days' worth)
stable_edges as (
    select
        as_of.as_of_date,
        stable_orders.customer_id,
        sum(case when stable_orders.order_date between as_of.as_of_date - 364 and as_of.as_of_date
                and stable_orders.order_date not between {{ date_to }} - 364 and {{ date_from }}
                then 1
            else 0
        end) as orders_365d,
        sum(case when stable_orders.order_date between as_of.as_of_date - 364 and as_of.as_of_date
                and stable_orders.order_date not between {{ date_to }} - 364 and {{ date_from }}
                then stable_orders.net_amount
            else 0
        end) as revenue_365d,
        sum(case when stable_orders.order_date between as_of.as_of_date - 364 and as_of.as_of_date
                and stable_orders.order_date not between {{ date_to }} - 364 and {{ date_from }}
                then stable_orders.margin_amount
            else 0
        end) as margin_365d,
        sum(case when stable_orders.order_date
                between as_of.as_of_date - {{ rfm_frame_days }} and as_of.as_of_date
                and stable_orders.order_date
                not between {{ date_to }} - {{ rfm_frame_days }} and {{ date_from }}
                then 1
            else 0
        end) as orders_rfm,
        sum(case when stable_orders.order_date
                between as_of.as_of_date - {{ rfm_frame_days }} and as_of.as_of_date
                and stable_orders.order_date
                not between {{ date_to }} - {{ rfm_frame_days }} and {{ date_from }}
                then stable_orders.net_amount
            else 0
        end) as net_rfm,
        max(case when stable_orders.order_date
                between as_of.as_of_date - {{ rfm_frame_days }} and as_of.as_of_date
                then stable_orders.order_date
        end) as last_order_rfm,
        sum(case when stable_orders.order_date between as_of.as_of_date - 89 and as_of.as_of_date
                and stable_orders.order_date not between {{ date_to }} - 89 and {{ date_from }}
                then 1
            else 0
        end) as orders_90d,
        sum(case when stable_orders.order_date
                between as_of.as_of_date - 119 and as_of.as_of_date - 30
                and stable_orders.order_date
                not between {{ date_to }} - 119 and {{ date_from }} - 30
                then 1
            else 0
        end) as orders_start
    from as_of
    inner join stable_orders
        on stable_orders.order_date <= as_of.as_of_date
    -- the bands where an order enters or leaves a window inside the spine
    where stable_orders.order_date between {{ date_from }} + 1 and {{ date_to }}
        or stable_orders.order_date between {{ date_from }} - 364 and {{ date_to }} - 365
        or stable_orders.order_date
        between {{ date_from }} - {{ rfm_frame_days }} and {{ date_to }} - {{ rfm_frame_days }} - 1
        or stable_orders.order_date between {{ date_from }} - 89 and {{ date_to }} - 90
        or stable_orders.order_date between {{ date_from }} - 119 and {{ date_to }} - 120
        or stable_orders.order_date between {{ date_from }} - 29 and {{ date_to }} - 30
    group by as_of.as_of_date, stable_orders.customer_id
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
            else 0
        end) as net_rfm,
        max(case when order_date > as_of_date - {{ rfm_lookback_days }} then order_date end)
            as last_order_rfm,
        sum(case when order_date > as_of_date - 90 then 1 else 0 end) as orders_90d,
        sum(case when order_date between as_of_date - 119 and as_of_date - 30 then 1 else 0 end)
            as orders_start
    from changing_orders
    group by as_of_date, customer_id
),

customers as (
    select customer_id from stable_core
    union
    select customer_id from stable_edges
    union
    select customer_id from changing_windows
),

combined as (
    select
        as_of.as_of_date,
        customers.customer_id,
        cast(
            coalesce(stable_core.orders_365d, 0) + coalesce(stable_edges.orders_365d, 0)
            + coalesce(changing_windows.orders_365d, 0) as bigint
        ) as purchases_365d,
        coalesce(stable_core.revenue_365d, 0) + coalesce(stable_edges.revenue_365d, 0)
        + coalesce(changing_windows.revenue_365d, 0) as revenue_12m,
        coalesce(stable_core.margin_365d, 0) + coalesce(stable_edges.margin_365d, 0)
        + coalesce(changing_windows.margin_365d, 0) as margin_12m,
        cast(
            coalesce(stable_core.orders_rfm, 0) + coalesce(stable_edges.orders_rfm, 0)
            + coalesce(changing_windows.orders_rfm, 0) as bigint
        ) as orders_rfm,
        coalesce(stable_core.net_rfm, 0) + coalesce(stable_edges.net_rfm, 0)
        + coalesce(changing_windows.net_rfm, 0) as net_rfm,
        greatest(
            stable_core.last_order_rfm, stable_edges.last_order_rfm,
            changing_windows.last_order_rfm
        ) as last_order_date_rfm,
        coalesce(stable_core.orders_90d, 0) + coalesce(stable_edges.orders_90d, 0)
        + coalesce(changing_windows.orders_90d, 0) as orders_90d,
        coalesce(stable_core.orders_start, 0) + coalesce(stable_edges.orders_start, 0)
        + coalesce(changing_windows.orders_start, 0) as orders_start
    from customers
    cross join as_of
    left join stable_core
        on customers.customer_id = stable_core.customer_id
    left join stable_edges
        on as_of.as_of_date = stable_edges.as_of_date
        and customers.customer_id = stable_edges.customer_id
    left join changing_windows
        on as_of.as_of_date = changing_windows.as_of_date
        and customers.customer_id = changing_windows.customer_id
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
