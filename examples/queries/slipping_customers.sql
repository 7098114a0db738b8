-- Who is slipping: customers who were Champions or Loyal 30 days ago, and where they are now.
with moves as (
    select * from marts.segment_migration
    where dimension = 'segment'
      and as_of_date = (select max(as_of_date) from marts.segment_migration)
),

final as (
    select
        from_value as was,
        to_value as now_in,
        customers
    from moves
    where from_value in ('Champions', 'Loyal')
      and to_value not in ('Champions', 'Loyal')
)

select * from final order by customers desc
