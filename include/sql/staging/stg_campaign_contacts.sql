-- grain: one row per stored version of a source campaign contact (campaign_id, customer_id), typed; versions of rows held in quarantine are left out
with source as (
    select * from raw.campaign_contacts
    where _row_hash not in (
            select held_rows.row_hash from quarantine.held_rows
            where held_rows.table_name = 'campaign_contacts'
        )
),

final as (
    select
        campaign_id,
        customer_id,
        cast(contacted_at as timestamp) as contacted_at,
        cast(responded_at as timestamp) as responded_at,
        cast(updated_at as timestamp) as updated_at,
        _batch_id,
        _row_hash
    from source
)

select * from final
