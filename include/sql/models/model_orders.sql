-- grain: one row per completed order placed up to the end of as_of_date, in the state it had then (the models' view of purchases at a cut-off)
with order_versions as (
    select * from staging.stg_orders
    where valid_from < {{ as_of_end }}
        and valid_to >= {{ as_of_end }}
        and ordered_at < {{ as_of_end }}
),

final as (
    select
        customer_id,
        order_id,
        cast(ordered_at as date) as order_date,
        channel,
        net_amount,
        net_amount - cost_amount as margin_amount
    from order_versions
    where status = 'completed'
)

select * from final
