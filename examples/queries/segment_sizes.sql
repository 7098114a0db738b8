-- How big is each RFM segment on the latest day, and what is it worth?
with latest as (
    select max(as_of_date) as as_of_date from marts.customer_rfm
),

final as (
    select
        rfm.segment,
        count(*) as customers,
        round(cast(avg(rfm.recency_days) as numeric), 1) as avg_recency_days,
        round(cast(avg(rfm.frequency) as numeric), 1) as avg_orders,
        sum(rfm.monetary) as revenue_12m
    from marts.customer_rfm as rfm
    inner join latest on rfm.as_of_date = latest.as_of_date
    group by rfm.segment
)

select * from final order by revenue_12m desc
