-- grain: one row per stored version of a source interaction (interaction_id), typed; versions of rows held in quarantine are left out
with source as (
    select * from raw.interactions
    where _row_hash not in (
            select held_rows.row_hash from quarantine.held_rows
            where held_rows.table_name = 'interactions'
        )
),

final as (
    select
        interaction_id,
        customer_id,
        cast(occurred_at as timestamp) as occurred_at,
        channel,
        direction,
        cast(updated_at as timestamp) as updated_at,
        _batch_id,
        _row_hash
    from source
)

select * from final
