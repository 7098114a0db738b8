-- grain: one row per as_of_date, dimension ('segment' or 'tier'), from_value and to_value: how many customers moved from where they stood 30 days before as_of_date to where they stand at it ('none': not in the base that day)
with as_of as (
    select
        as_of_date,
        as_of_date - 30 as before_date
    from as_of_dates
),

-- the days compared and the days 30 before them, not the whole history: by bounds the
-- scan can skip by (a semi-join on the spine would read every day built)
positions as (
    select
        as_of_date,
        customer_id,
        'segment' as dimension,
        segment as position
    from marts.customer_rfm
    where as_of_date between {{ date_from }} and {{ date_to }}
        or as_of_date between {{ date_from }} - 30 and {{ date_to }} - 30
    union all
    select
        as_of_date,
        customer_id,
        'tier' as dimension,
        tier as position
    from marts.customer_value_tier
    where as_of_date between {{ date_from }} and {{ date_to }}
        or as_of_date between {{ date_from }} - 30 and {{ date_to }} - 30
),

-- a date is compared only when the snapshot 30 days before it was built
built_before as (
    select distinct as_of_date
    from marts.customer_rfm
    where as_of_date between {{ date_from }} - 30 and {{ date_to }} - 30
),

comparable as (
    select as_of.*
    from as_of
    inner join built_before
        on as_of.before_date = built_before.as_of_date
),

now_positions as (
    select
        comparable.as_of_date,
        positions.customer_id,
        positions.dimension,
        positions.position
    from comparable
    inner join positions on positions.as_of_date = comparable.as_of_date
),

before_positions as (
    select
        comparable.as_of_date,
        positions.customer_id,
        positions.dimension,
        positions.position
    from comparable
    inner join positions on positions.as_of_date = comparable.before_date
),

moves as (
    select
        coalesce(now_positions.as_of_date, before_positions.as_of_date) as as_of_date,
        coalesce(now_positions.dimension, before_positions.dimension) as dimension,
        coalesce(before_positions.position, 'none') as from_value,
        coalesce(now_positions.position, 'none') as to_value
    from now_positions
    full outer join before_positions
        on now_positions.as_of_date = before_positions.as_of_date
        and now_positions.dimension = before_positions.dimension
        and now_positions.customer_id = before_positions.customer_id
),

final as (
    select
        as_of_date,
        dimension,
        from_value,
        to_value,
        count(*) as customers
    from moves
    group by as_of_date, dimension, from_value, to_value
)

select * from final
