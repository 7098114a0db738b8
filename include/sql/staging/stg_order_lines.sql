-- grain: one row per stored version of a source order line (order_id, line_no), typed; versions of rows held in quarantine are left out
with source as (
    select * from raw.order_lines
    where _row_hash not in (
            select held_rows.row_hash from quarantine.held_rows
            where held_rows.table_name = 'order_lines'
        )
),

final as (
    select
        order_id,
        cast(line_no as integer) as line_no,
        product_id,
        cast(quantity as integer) as quantity,
        cast(unit_price as decimal(14, 2)) as unit_price,
        cast(net_amount as decimal(14, 2)) as net_amount,
        cast(updated_at as timestamp) as updated_at,
        _batch_id,
        _row_hash
    from source
)

select * from final
