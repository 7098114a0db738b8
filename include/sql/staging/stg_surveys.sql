-- grain: one row per stored version of a source survey response (response_id), typed; versions of rows held in quarantine are left out
with source as (
    select * from raw.surveys
    where _row_hash not in (
            select held_rows.row_hash from quarantine.held_rows
            where held_rows.table_name = 'surveys'
        )
),

final as (
    select
        response_id,
        customer_id,
        cast(responded_at as timestamp) as responded_at,
        survey_type,
        cast(score as integer) as score,
        comment,
        order_id,
        cast(updated_at as timestamp) as updated_at,
        _batch_id,
        _row_hash
    from source
)

select * from final
