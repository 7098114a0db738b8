-- The top of the value pyramid today: who they are, where they live, how they buy.
with tiers as (
    select * from marts.customer_value_tier
    where as_of_date = (select max(as_of_date) from marts.customer_value_tier)
      and tier in ('vip', 'key')
),

final as (
    select
        tiers.rank,
        tiers.tier,
        tiers.customer_id,
        dim_customer.region,
        dim_customer.segment,
        tiers.margin_12m,
        tiers.revenue_12m,
        dim_customer.last_order_date
    from tiers
    left join marts.dim_customer on tiers.customer_id = dim_customer.customer_id
)

select * from final order by rank
