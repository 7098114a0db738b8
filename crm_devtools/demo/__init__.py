"""Demo CRM source: a regional dairy that delivers milk and yogurt to subscribers.

Why: the pipeline needs a source that behaves like a real CRM database - subscribers with
regular repeat orders, several sales channels, products that launch and fade, customers who
leave after bad experiences, and rows that change after they were first written - at any size
from a unit-test fixture to a million customers. The tables are the ones in
``crm_pipeline.source_schema`` (the source contract: docs/data_dictionary.md, "The source"); this
package only fills them.

How the simulation works
------------------------
Customers are simulated one day at a time by ``_simulate_day``. ``generate`` walks the whole
history one chunk of customers at a time (chunk ``i`` draws from
``numpy.random.default_rng([seed, i])``), so memory is bounded by a chunk, not by the base.
``advance`` rebuilds the same simulation state for the whole base from the source tables and
runs one more day with ``default_rng([seed, tag, day])``.

No per-customer state table is needed for that, because:

* per-customer traits (subscriber / regular / occasional, order rhythm, basket size, churn
  hazard and patience, mood) are a pure hash of (seed, customer number);
* things that unfold later - a complaint's steps and outcome, a random refund, a campaign
  response - are planned by a pure hash of (seed, row number) and revealed once their time
  has come: ``generate`` cuts them at the end of history, ``advance`` reveals the ones due;
* churn is a threshold rule: a customer accrues ``base_hazard * exp(experience)`` per day
  and leaves on the first day the sum passes their patience (an Exp(1) trait). Experience
  is a sum of effects of observable rows (complaints, slow complaints, survey scores,
  campaign responses), so the sum can be recomputed from the tables (``_replay_hazard``).
  A churned customer stops ordering; a winback campaign response brings a few back once.

Storage
-------
Everything is built as numpy columns in internal units - timestamps as int64 UTC epoch
seconds, money as int64 cents, ids as integers - and converted only when written (ids to
'C0000001'-style text, cents to 2-decimal numbers). For SQLite the rows go through the raw
DBAPI ``executemany`` (one transaction per chunk, WAL, synchronous=OFF) in SQLAlchemy's own
storage format ('YYYY-MM-DD HH:MM:SS.000000'), so SQLAlchemy reads them back as datetimes;
other URLs use SQLAlchemy Core executemany. Run state (seed, window, parameters, id counters)
lives in the ``demo_meta`` (key, value) table.

Modules
-------
What belongs in this package: the simulated business and its source database, nothing the
pipeline runs. ``history`` holds the entry points (``generate``, ``advance``, ``last_day``);
``settings`` the business's vocabulary and parameters; ``draws`` the calendar and the
counter-based hashing; ``business`` the catalogue, campaigns and spend (``_World``);
``customers`` traits, state and sign-ups; ``orders`` and ``crm_events`` one simulated day;
``plans`` what unfolds later and its reveal at a horizon; ``store`` the database; ``replay``
the state rebuilt from the tables; ``drift`` the late changes to older rows. The command
line is ``python -m crm_devtools`` (``crm_devtools.cli``).
"""

from crm_devtools.demo.history import advance, generate, last_day

__all__ = ["advance", "generate", "last_day"]
