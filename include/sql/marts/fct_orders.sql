-- grain: one row per order placed up to the end of as_of_date, in the state it had then
with orders as (
    select * from staging.stg_orders
    where valid_from < {{ as_of_end }}
        and valid_to >= {{ as_of_end }}
        and ordered_at < {{ as_of_end }}
),

final as (
    select
        order_id,
        customer_id,
        cast(ordered_at as date) as order_date,
        ordered_at,
        status,
        channel,
        gross_amount,
        discount_amount,
        net_amount,
        cost_amount,
        net_amount - cost_amount as margin_amount,
        status = 'completed' as is_purchase,
        {{ as_of_date }} as as_of_date
    from orders
)

select * from final
