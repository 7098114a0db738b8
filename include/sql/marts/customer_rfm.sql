-- grain: one row per as_of_date and customer with a completed purchase in the {{ rfm_lookback_days }} days ending at as_of_date
with customer_days as (
    select * from int_customer_days
    where orders_rfm > 0
),

-- (R, F, days since the first completed order, capped) -> segment: kpis.segment_lookup
segment_lookup as (
    select * from rfm_segment_lookup
),

customers as (
    select
        as_of_date,
        customer_id,
        first_purchase_date
    from int_customers
),

rfm_values as (
    select
        as_of_date,
        customer_id,
        as_of_date - last_order_date_rfm as recency_days,
        orders_rfm as frequency,
        net_rfm as monetary
    from customer_days
),

-- quintile by rank: score = 1 + floor(5 * (rank - 1) / n); ties share the lowest rank, so
-- equal values always get equal scores, and the order of rows never matters
ranked as (
    select
        rfm_values.*,
        count(*) over (partition by rfm_values.as_of_date) as base_size,
        rank()
            over (partition by rfm_values.as_of_date order by rfm_values.recency_days desc)
            as r_rank,
        rank()
            over (partition by rfm_values.as_of_date order by rfm_values.frequency asc)
            as f_rank,
        rank() over (partition by rfm_values.as_of_date order by rfm_values.monetary asc) as m_rank
    from rfm_values
),

scored as (
    select
        as_of_date,
        customer_id,
        recency_days,
        frequency,
        monetary,
        cast(floor(5.0 * (r_rank - 1) / base_size) as integer) + 1 as r_score,
        cast(floor(5.0 * (f_rank - 1) / base_size) as integer) + 1 as f_score,
        cast(floor(5.0 * (m_rank - 1) / base_size) as integer) + 1 as m_score
    from ranked
),

-- the segment of the customer's cell: a rule with first_order_within_days (New) takes only
-- customers whose first completed order falls in that many days ending at the date, the
-- others fall through to the cell's next rule (worked out per day count in segment_lookup)
final as (
    select
        scored.as_of_date,
        scored.customer_id,
        scored.recency_days,
        scored.frequency,
        scored.monetary,
        scored.r_score,
        scored.f_score,
        scored.m_score,
        cast(scored.r_score as varchar) || cast(scored.f_score as varchar)
        || cast(scored.m_score as varchar) as rfm_cell,
        segment_lookup.segment
    from scored
    left join customers
        on scored.as_of_date = customers.as_of_date
        and scored.customer_id = customers.customer_id
    inner join segment_lookup
        on scored.r_score = segment_lookup.r_score
        and scored.f_score = segment_lookup.f_score
        and segment_lookup.first_order_days = least(greatest(coalesce(
            scored.as_of_date - customers.first_purchase_date, {{ rfm_first_order_cap }}
        ), 0), {{ rfm_first_order_cap }})
)

select * from final
