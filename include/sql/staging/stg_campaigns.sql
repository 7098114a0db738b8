-- grain: one row per stored version of a source campaign (campaign_id), typed; versions of rows held in quarantine are left out
with source as (
    select * from raw.campaigns
    where _row_hash not in (
            select held_rows.row_hash from quarantine.held_rows
            where held_rows.table_name = 'campaigns'
        )
),

final as (
    select
        campaign_id,
        name,
        channel,
        objective,
        cast(started_at as timestamp) as started_at,
        cast(ended_at as timestamp) as ended_at,
        cast(spend as decimal(14, 2)) as spend,
        cast(updated_at as timestamp) as updated_at,
        _batch_id,
        _row_hash
    from source
)

select * from final
