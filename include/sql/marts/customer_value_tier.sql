-- grain: one row per as_of_date and customer with a completed purchase in the 365 days ending at as_of_date
with value_12m as (
    select
        as_of_date,
        customer_id,
        revenue_12m,
        margin_12m
    from int_customer_days
),

-- rank by 12-month margin; ties broken by revenue, then customer_id, so ranks are unique
ranked as (
    select
        value_12m.*,
        row_number() over (
            partition by value_12m.as_of_date
            order by
                value_12m.margin_12m desc, value_12m.revenue_12m desc, value_12m.customer_id asc
        ) as rank,
        count(*) over (partition by value_12m.as_of_date) as base_size
    from value_12m
),

-- a customer is in the top p% when fewer than p% of the base rank above them
final as (
    select
        as_of_date,
        customer_id,
        revenue_12m,
        margin_12m,
        rank,
        case
            when 100 * (rank - 1) < {{ vip_cum_pct }} * base_size then 'vip'
            when 100 * (rank - 1) < {{ key_cum_pct }} * base_size then 'key'
            when 100 * (rank - 1) < {{ regular_cum_pct }} * base_size then 'regular'
            else 'small'
        end as tier
    from ranked
)

select * from final
