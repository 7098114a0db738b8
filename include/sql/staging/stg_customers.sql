-- grain: one row per stored version of a source customer (customer_id), typed; versions of rows held in quarantine are left out
with source as (
    select * from raw.customers
    where _row_hash not in (
            select held_rows.row_hash from quarantine.held_rows
            where held_rows.table_name = 'customers'
        )
),

final as (
    select
        customer_id,
        cast(created_at as timestamp) as created_at,
        name,
        email,
        city,
        region,
        acquisition_channel,
        cast(birth_year as integer) as birth_year,
        gender,
        income_band,
        cast(loyalty_member as boolean) as loyalty_member,
        loyalty_tier,
        cast(updated_at as timestamp) as updated_at,
        _batch_id,
        _row_hash
    from source
)

select * from final
