-- grain: one row per stored version of a source marketing spend line (spend_date, channel, objective), typed; versions of rows held in quarantine are left out
with source as (
    select * from raw.marketing_spend
    where _row_hash not in (
            select held_rows.row_hash from quarantine.held_rows
            where held_rows.table_name = 'marketing_spend'
        )
),

final as (
    select
        cast(spend_date as date) as spend_date,
        channel,
        objective,
        cast(amount as decimal(14, 2)) as amount,
        cast(updated_at as timestamp) as updated_at,
        _batch_id,
        _row_hash
    from source
)

select * from final
