-- grain: one row per stored version of a source complaint (complaint_id), typed; versions of rows held in quarantine are left out
with source as (
    select * from raw.complaints
    where _row_hash not in (
            select held_rows.row_hash from quarantine.held_rows
            where held_rows.table_name = 'complaints'
        )
),

final as (
    select
        complaint_id,
        customer_id,
        order_id,
        cast(opened_at as timestamp) as opened_at,
        cast(first_response_at as timestamp) as first_response_at,
        cast(cause_found_at as timestamp) as cause_found_at,
        cast(remedy_decided_at as timestamp) as remedy_decided_at,
        cast(remedy_done_at as timestamp) as remedy_done_at,
        cast(customer_informed_at as timestamp) as customer_informed_at,
        cast(closed_at as timestamp) as closed_at,
        category,
        severity,
        outcome,
        cast(updated_at as timestamp) as updated_at,
        _batch_id,
        _row_hash
    from source
)

select * from final
