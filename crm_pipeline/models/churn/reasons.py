"""Why a customer's churn risk is high, in plain words.

Why it exists: a manager acts on a reason, not on a probability; this turns the
classifier's trees into the top reasons of each customer scored. Grain: one contribution
per customer and reason group, one line of reasons per customer.

Attribution by local replacement, one group of features at a time: for each customer and
each reason group (recency, activity trend, complaints, CSAT, ...), the group's features
are replaced by the reference value of the scored population (the median of a numeric
feature, the most frequent value of a categorical one, "missing" where most customers have
no value, e.g. no survey answer), and the drop in the classifier's log-odds is that
group's contribution. The top 3 groups with a positive contribution (above
`reasons.min_log_odds`) become plain-words reasons written from the customer's own values.
It is an approximation of the model's attributions (groups are replaced separately, so
interactions between groups are split arbitrarily), documented in docs/models.md.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from crm_pipeline.models.churn.classifier import ChurnModel
from crm_pipeline.models.churn.inputs import MODEL_FEATURES

# --------------------------------------------------------------------------------------
# Reasons in plain words
# --------------------------------------------------------------------------------------


def _n(value: float) -> str:
    return "?" if value is None or not math.isfinite(value) else f"{value:.0f}"


def _plural(value: float, word: str) -> str:
    return f"{_n(value)} {word}{'' if round(value) == 1 else 's'}"


def _when(days: float) -> str:
    if not math.isfinite(days):
        return ""
    if days <= 1:
        return "in the last day"
    if days <= 14:
        return f"{days:.0f} days ago"
    if days <= 45:
        return "last month"
    return f"{days / 30.4:.0f} months ago"


def _recency(r: Mapping[str, Any]) -> str:
    days, gap = r["recency_days"], r["usual_gap_days"]
    if not math.isfinite(gap):
        return f"no order for {_plural(days, 'day')} (one purchase day so far)"
    if days < gap:
        return f"orders rarely: usually every {_plural(max(gap, 1), 'day')}"
    return f"no order for {_plural(days, 'day')} (usually every {max(gap, 1):.0f})"


def _activity(r: Mapping[str, Any]) -> str:
    text = f"{_plural(r['orders_90'], 'order')} in the last 90 days vs {_n(r['orders_prev_90'])} before"
    return text if r["orders_30"] > 0 else text + ", none in the last 30"


def _spend(r: Mapping[str, Any]) -> str:
    now, before = r["spend_90"], r["spend_prev_90"]
    if before > 0 and now < before:
        return f"spend down {100 * (1 - now / before):.0f}% on the previous 90 days"
    return f"spend {now:.0f} in the last 90 days (average order {r['avg_order_value_365']:.0f})"


def _buying_pattern(r: Mapping[str, Any]) -> str:
    alive, expected = r["p_alive"], r["expected_purchases_90"]
    if math.isfinite(alive) and alive < 0.5:
        return f"buying pattern suggests they may have stopped (P(alive) {alive:.2f})"
    if math.isfinite(alive) and alive < 0.8:
        return f"buying pattern suggests they are slipping (P(alive) {alive:.2f})"
    return f"only {expected:.1f} orders expected in the next 90 days"


def _history(r: Mapping[str, Any]) -> str:
    if r["tenure_days"] < 90:
        return f"new customer: first order {_plural(r['tenure_days'], 'day')} ago"
    tier = r["value_tier"] if isinstance(r["value_tier"], str) else "no"
    return f"{tier} tier, {_plural(r['orders_365'], 'order')} in 12 months"


def _complaints(r: Mapping[str, Any]) -> str:
    if r["complaints_90"] > 0:
        text = f"{_plural(r['complaints_90'], 'complaint')} in 90 days"
    elif r["complaints_365"] > 0:
        text = f"{_plural(r['complaints_365'], 'complaint')} in 12 months"
    else:
        return "no complaint on record"
    hours = r["complaint_resolution_hours"]
    if math.isfinite(hours) and hours > 48:
        text += f", slow resolution ({hours:.0f} h on average)"
    if r["open_complaints"] > 0:
        text += f", {_n(r['open_complaints'])} still open"
    if r["high_severity_complaints_365"] > 0:
        text += ", high severity"
    return text


def _csat(r: Mapping[str, Any]) -> str:
    if not math.isfinite(r["last_csat"]):
        return "no CSAT answer in 12 months"
    return f"CSAT {r['last_csat']:.0f} {_when(r['days_since_csat'])}".strip()


def _nps(r: Mapping[str, Any]) -> str:
    if not math.isfinite(r["last_nps"]):
        return "no NPS answer in 12 months"
    score = r["last_nps"]
    kind = "detractor" if score <= 6 else ("passive" if score <= 8 else "promoter")
    return f"NPS {score:.0f} ({kind}) {_when(r['days_since_nps'])}".strip()


def _campaigns(r: Mapping[str, Any]) -> str:
    contacts, responses = r["campaign_contacts_180"], r["campaign_responses_180"]
    if contacts == 0:
        return "no campaign contact in 180 days"
    if responses == 0:
        return f"no response to {_plural(contacts, 'campaign contact')} in 180 days"
    return f"answered {_n(responses)} of {_plural(contacts, 'campaign contact')} in 180 days"


def _loyalty(r: Mapping[str, Any]) -> str:
    if r["loyalty_member"] < 0.5:
        return "not a loyalty member"
    days = r["days_since_loyalty_activity"]
    if not math.isfinite(days):
        return "loyalty member with no points activity in 12 months"
    if days > 30:
        return f"no loyalty points activity for {_plural(days, 'day')}"
    return (
        f"loyalty: {_n(r['points_earned_90'])} points earned, "
        f"{_n(r['points_redeemed_90'])} redeemed in 90 days"
    )


def _service(r: Mapping[str, Any]) -> str:
    return (
        f"{_plural(r['inbound_contacts_90'], 'inbound contact')} and "
        f"{_n(r['outbound_contacts_90'])} outbound in 90 days"
    )


def _channel(r: Mapping[str, Any]) -> str:
    channel = r["main_channel"] if isinstance(r["main_channel"], str) else "unknown"
    return (
        f"buys mainly via {channel.replace('_', ' ')} ({_plural(r['n_channels_365'], 'channel')})"
    )


def _profile(r: Mapping[str, Any]) -> str:
    region = r["region"] if isinstance(r["region"], str) else "unknown"
    acq = r["acquisition_channel"] if isinstance(r["acquisition_channel"], str) else "unknown"
    return f"profile: acquired via {acq.replace('_', ' ')}, {region} region"


#: Reason groups: features replaced together, and how to say it in words.
REASON_GROUPS: dict[str, tuple[tuple[str, ...], Callable[[Mapping[str, Any]], str]]] = {
    "recency": (("recency_days", "usual_gap_days"), _recency),
    "activity_trend": (("orders_30", "orders_90", "orders_prev_90"), _activity),
    "spend_trend": (("spend_90", "spend_prev_90", "avg_order_value_365"), _spend),
    "buying_pattern": (MODEL_FEATURES, _buying_pattern),
    "history": (
        (
            "tenure_days",
            "account_age_days",
            "orders_total",
            "orders_365",
            "spend_365",
            "margin_365",
            "value_tier",
        ),
        _history,
    ),
    "complaints": (
        (
            "complaints_90",
            "complaints_365",
            "high_severity_complaints_365",
            "open_complaints",
            "complaint_response_hours",
            "complaint_resolution_hours",
        ),
        _complaints,
    ),
    "csat": (("last_csat", "days_since_csat", "csat_avg_365"), _csat),
    "nps": (("last_nps", "days_since_nps"), _nps),
    "campaigns": (("campaign_contacts_180", "campaign_responses_180"), _campaigns),
    "loyalty": (
        ("loyalty_member", "points_earned_90", "points_redeemed_90", "days_since_loyalty_activity"),
        _loyalty,
    ),
    "service_contacts": (("inbound_contacts_90", "outbound_contacts_90"), _service),
    "channel": (("main_channel", "n_channels_365"), _channel),
    "profile": (("region", "acquisition_channel"), _profile),
}


def reference_values(x: pd.DataFrame) -> dict[str, Any]:
    """The typical customer of the scored population, feature by feature: median (numeric),
    most frequent value (categorical), missing where most customers have no value."""
    ref: dict[str, Any] = {}
    for col in x.columns:
        s = x[col]
        if s.isna().mean() > 0.5:
            ref[col] = np.nan
        elif isinstance(s.dtype, pd.CategoricalDtype):
            counts = s.value_counts(sort=False)
            ref[col] = counts.sort_values(ascending=False, kind="stable").index[0]
        else:
            ref[col] = float(s.median())
    return ref


def _tree_features(classifier: Any, columns: list[str]) -> list[set[str]] | None:
    """The features each tree of a binary HistGradientBoostingClassifier splits on, by
    name; None when the classifier's layout is not the one known here."""
    try:
        predictors = classifier._predictors
        categorical = np.asarray(classifier.is_categorical_, dtype=bool)
    except AttributeError:
        return None
    if classifier.n_trees_per_iteration_ != 1 or len(categorical) != len(columns):
        return None
    # the classifier's own column order: its encoder puts the categorical columns first
    order = [c for c, cat in zip(columns, categorical, strict=True) if cat]
    order += [c for c, cat in zip(columns, categorical, strict=True) if not cat]
    out = []
    for (tree,) in predictors:
        nodes = tree.nodes
        out.append(
            {order[i] for i in np.unique(nodes["feature_idx"][~nodes["is_leaf"].astype(bool)])}
        )
    return out


#: customers per block of the per-tree values (rows x trees x 8 bytes: 160 MB at 200 trees)
CONTRIBUTION_BLOCK = 100_000


def _replace(
    x: pd.DataFrame, cols: list[str], ref: Mapping[str, Any]
) -> tuple[np.ndarray, pd.DataFrame]:
    """(rows whose values differ from the reference in any of `cols`, x with `cols` set to
    the reference)."""
    differs = np.zeros(len(x), dtype=bool)
    replaced = x.copy()
    for c in cols:
        if isinstance(replaced[c].dtype, pd.CategoricalDtype):
            value = ref[c] if isinstance(ref[c], str) else None
            differs |= ~_same(x[c].astype(object), value)
            replaced[c] = pd.Categorical(
                [value] * len(replaced), categories=replaced[c].cat.categories
            )
        else:
            differs |= ~_same(x[c], ref[c])
            replaced[c] = ref[c]
    return differs, replaced


def _tree_values(classifier: Any, x: pd.DataFrame, trees: list[int], threads: int) -> np.ndarray:
    """Each given tree's value for each row (trees x rows), by the classifier's own code."""
    bitsets, f_idx_map = classifier._bin_mapper.make_known_categories_bitsets()
    pre = classifier._preprocess_X(x, reset=False)
    out = np.empty((len(trees), len(x)))
    for j, t in enumerate(trees):
        (tree,) = classifier._predictors[t]
        out[j] = tree.predict(
            pre, known_cat_bitsets=bitsets, f_idx_map=f_idx_map, n_threads=threads
        )
    return out


def contributions(model: ChurnModel, features: pd.DataFrame, threads: int = 1) -> pd.DataFrame:
    """Per customer and reason group: classifier log-odds minus the log-odds with the group's
    features set to the population's reference values (positive = raises the risk).

    The log-odds is a sum over trees, and only the trees that split on one of the group's
    features can differ between the two: each tree's value is computed once per customer,
    and only those trees again on the replaced values (at a million customers, 60% of the
    tree evaluations of scoring the whole classifier once per group). A test compares it
    with the whole classifier's difference."""
    if features.empty:
        return pd.DataFrame(columns=list(REASON_GROUPS), index=features.index, dtype=float)
    x = model.encoder.transform(features)
    ref = reference_values(x)
    clf = model.classifier
    per_tree = _tree_features(clf, list(x.columns))
    groups = {
        group: [c for c in cols if c in x.columns]
        for group, (cols, _) in REASON_GROUPS.items()
        if any(c in x.columns for c in cols)
    }
    out = {group: np.zeros(len(x)) for group in groups}
    with threadpool_limits(limits=threads):
        if per_tree is None:  # a classifier laid out otherwise: the whole of it, per group
            base = clf.decision_function(x)
            for group, cols in groups.items():
                differs, replaced = _replace(x, cols, ref)
                if differs.any():
                    out[group][differs] = base[differs] - clf.decision_function(replaced[differs])
            return pd.DataFrame(out, index=features.index)
        every_tree = list(range(len(per_tree)))
        for start in range(0, len(x), CONTRIBUTION_BLOCK):
            block = x.iloc[start : start + CONTRIBUTION_BLOCK]
            values = _tree_values(clf, block, every_tree, threads)
            for group, cols in groups.items():
                # a customer whose values already are the reference ones gets exactly 0:
                # only the others are scored again (most have no complaint or survey)
                differs, replaced = _replace(block, cols, ref)
                trees = [t for t in every_tree if per_tree[t].intersection(cols)]
                if differs.any() and trees:
                    own = np.zeros(len(block))
                    for t in trees:
                        own += values[t]
                    again = _tree_values(clf, replaced[differs], trees, threads).sum(axis=0)
                    out[group][start : start + len(block)][differs] = own[differs] - again
    return pd.DataFrame(out, index=features.index)


def _same(values: pd.Series, reference: Any) -> np.ndarray:
    """Where a column already holds the reference value (missing equals missing)."""
    if reference is None or (isinstance(reference, float) and np.isnan(reference)):
        return values.isna().to_numpy()
    return (values == reference).fillna(False).to_numpy(dtype=bool)


class _Row(Mapping[str, Any]):
    """One customer's values, read from per-column lists (floats, NaN for missing, or text)
    only as a reason's words ask for them: a dict per customer cost most of the scoring
    time at a million customers."""

    __slots__ = ("_columns", "_i")

    def __init__(self, columns: Mapping[str, list], i: int):
        self._columns, self._i = columns, i

    def __getitem__(self, key: str) -> Any:
        return self._columns[key][self._i]

    def __iter__(self):
        return iter(self._columns)

    def __len__(self) -> int:
        return len(self._columns)


def _plain_column(values: pd.Series) -> list:
    """A column as plain Python values: numbers as float, missing as NaN, text as text
    (the features are numbers or text, never numbers in a text column)."""
    if pd.api.types.is_numeric_dtype(values.dtype) and not pd.api.types.is_bool_dtype(values.dtype):
        return values.to_numpy(dtype=float, na_value=np.nan).tolist()
    values = values.astype(object)
    return values.where(values.notna(), np.nan).tolist()


def top_reasons(
    features: pd.DataFrame, contrib: pd.DataFrame, top_n: int = 3, min_log_odds: float = 0.05
) -> list[str]:
    """The top `top_n` groups raising each customer's risk, in words, joined by '; '."""
    groups = list(contrib.columns)
    say = [REASON_GROUPS[g][1] for g in groups]
    values = contrib.to_numpy()
    order = np.argsort(-values, axis=1, kind="stable")[:, :top_n]
    strong = np.take_along_axis(values, order, axis=1) > min_log_odds
    columns = {c: _plain_column(features[c]) for c in features.columns}
    texts = []
    for i in range(len(values)):
        row = _Row(columns, i)
        words = [say[j](row) for j, ok in zip(order[i], strong[i], strict=True) if ok]
        texts.append("; ".join(words) if words else "no single factor stands out")
    return texts


def reason_summary(contrib: pd.DataFrame, min_log_odds: float = 0.05) -> dict[str, float]:
    """Share of scored customers for whom each group is the first reason (for model_runs)."""
    if contrib.empty:
        return {}
    first = contrib.idxmax(axis=1).where(contrib.max(axis=1) > min_log_odds, "none")
    shares = first.value_counts(normalize=True).sort_index()
    return {k: round(float(v), 4) for k, v in shares.items()}
