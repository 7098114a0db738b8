-- grain: one row per customer with a completed order in the label window (as_of_date, label_end_date], as known at the end of label_end_date: the customers who did not churn
with order_versions as (
    select * from staging.stg_orders
    where valid_from < {{ label_end }}
        and valid_to >= {{ label_end }}
        and ordered_at >= {{ as_of_end }}
        and ordered_at < {{ label_end }}
),

final as (
    select distinct customer_id
    from order_versions
    where status = 'completed'
)

select * from final
