-- grain: one row per stored version of a source order (order_id), typed; versions of rows held in quarantine are left out
with source as (
    select * from raw.orders
    where _row_hash not in (
            select held_rows.row_hash from quarantine.held_rows
            where held_rows.table_name = 'orders'
        )
),

final as (
    select
        order_id,
        customer_id,
        cast(ordered_at as timestamp) as ordered_at,
        status,
        channel,
        cast(gross_amount as decimal(14, 2)) as gross_amount,
        cast(discount_amount as decimal(14, 2)) as discount_amount,
        cast(net_amount as decimal(14, 2)) as net_amount,
        cast(cost_amount as decimal(14, 2)) as cost_amount,
        cast(updated_at as timestamp) as updated_at,
        _batch_id,
        _row_hash
    from source
)

select * from final
