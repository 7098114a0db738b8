-- grain: one row per as_of_date and completed order placed in the {{ period_days }} days ending at as_of_date, in its state at the end of as_of_date
with as_of as (
    select * from as_of_dates
),

order_versions as (
    select * from int_order_versions
),

final as (
    select
        as_of.as_of_date,
        order_versions.order_id,
        order_versions.customer_id,
        order_versions.order_date,
        order_versions.channel,
        order_versions.net_amount,
        order_versions.margin_amount
    from as_of
    inner join order_versions
        on order_versions.first_valid_day <= as_of.as_of_date
        and order_versions.last_valid_day >= as_of.as_of_date
        and order_versions.order_date <= as_of.as_of_date
        and order_versions.order_date > as_of.as_of_date - {{ period_days }}
    -- the same bound for the whole spine, so the scan skips the rest of history before joining
    where order_versions.order_date > {{ date_from }} - {{ period_days }}
)

select * from final
