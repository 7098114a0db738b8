-- grain: one row per stored version of a source product (product_id), typed; versions of rows held in quarantine are left out
with source as (
    select * from raw.products
    where _row_hash not in (
            select held_rows.row_hash from quarantine.held_rows
            where held_rows.table_name = 'products'
        )
),

final as (
    select
        product_id,
        name,
        category,
        cast(launched_at as timestamp) as launched_at,
        cast(discontinued_at as timestamp) as discontinued_at,
        cast(updated_at as timestamp) as updated_at,
        _batch_id,
        _row_hash
    from source
)

select * from final
