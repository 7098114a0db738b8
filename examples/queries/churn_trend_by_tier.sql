-- Churn rate by value tier, day by day over the last 90 days: is the top of the pyramid slipping?
with history as (
    select * from marts.kpi_daily
    where kpi = 'churn_rate'
      and dimension in ('all', 'tier')
      and as_of_date > (select max(as_of_date) from marts.kpi_daily) - 90
),

final as (
    select
        as_of_date,
        dimension_value as tier,
        value as churn_rate,
        denominator as customers_active_30_days_before
    from history
)

select * from final order by as_of_date, tier
