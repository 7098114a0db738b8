-- The plan's headline KPIs on the latest day, with their level 30 days earlier.
with latest as (
    select max(as_of_date) as as_of_date from marts.kpi_daily
),

today as (
    select kpi_daily.kpi, kpi_daily.value
    from marts.kpi_daily
    inner join latest on kpi_daily.as_of_date = latest.as_of_date
    where kpi_daily.dimension = 'all'
),

month_ago as (
    select kpi_daily.kpi, kpi_daily.value
    from marts.kpi_daily
    inner join latest on kpi_daily.as_of_date = latest.as_of_date - 30
    where kpi_daily.dimension = 'all'
),

final as (
    select
        today.kpi,
        today.value,
        month_ago.value as value_30_days_before
    from today
    left join month_ago on today.kpi = month_ago.kpi
)

select * from final order by kpi
