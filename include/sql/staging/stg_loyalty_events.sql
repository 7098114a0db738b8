-- grain: one row per stored version of a source loyalty event (event_id), typed; versions of rows held in quarantine are left out
with source as (
    select * from raw.loyalty_events
    where _row_hash not in (
            select held_rows.row_hash from quarantine.held_rows
            where held_rows.table_name = 'loyalty_events'
        )
),

final as (
    select
        event_id,
        customer_id,
        cast(occurred_at as timestamp) as occurred_at,
        kind,
        cast(points as integer) as points,
        tier,
        cast(updated_at as timestamp) as updated_at,
        _batch_id,
        _row_hash
    from source
)

select * from final
