"""How a KPI's value and change read in words: '4.2%', '+1.3 pts', '€1,234.56', '37.0 h'.

Presentation, shared by the evaluation's reasons (marts.kpi_evaluation.reason), the alert
email and its charts: one place decides that a share shows as a percent with one decimal
and its change in points, so the reason a manager reads in the warehouse and the figure in
the email agree. Grain: one value in one unit (share, percent, score, count, money, hours;
anything else is a plain number with two decimals).
"""

from __future__ import annotations

import math


def _num(v: float, decimals: int, compact: bool) -> str:
    text = f"{v:,.{decimals}f}"
    if compact and "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


CURRENCY_SYMBOLS = {"EUR": "€", "USD": "$", "GBP": "£", "JPY": "¥"}


def money_text(v: float, currency: str = "", decimals: int = 2) -> str:
    """'€1,234.56', 'CHF 1,234.56', or the bare number without a currency."""
    text = f"{abs(v):,.{decimals}f}"
    sign = "−" if v < 0 and any(ch in "123456789" for ch in text) else ""
    if not currency:
        return sign + text
    symbol = CURRENCY_SYMBOLS.get(currency.upper())
    return f"{sign}{symbol}{text}" if symbol else f"{sign}{currency.upper()} {text}"


def format_value(unit: str, v: float | None, compact: bool = False, currency: str = "") -> str:
    """A value in its unit ('n/a' for None or NaN); `compact` drops trailing zeros ('5%')."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    if unit == "money" and currency:
        return money_text(v, currency, 2)
    if unit == "share":
        return _num(100 * v, 1, compact) + "%"
    if unit == "percent":
        return _num(v, 1, compact) + "%"
    if unit == "score":
        return _num(v, 1, compact)
    if unit == "count":
        return _num(v, 0, compact)
    if unit == "money":
        return _num(v, 2, compact)
    if unit == "hours":
        return _num(v, 1, compact) + " h"
    return _num(v, 2, compact)


def format_change(unit: str, v: float | None, currency: str = "") -> str:
    """A difference in its unit with its sign ('+1.3 pts', '−€2.00'); no sign on a change
    that rounds to zero."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    a = abs(v)
    if unit == "money" and currency:
        text = money_text(a, currency, 2)
        if not any(ch in "123456789" for ch in text):
            return text
        return ("+" if v > 0 else "−") + text
    if unit == "share":
        text = f"{100 * a:.1f} pts"
    elif unit == "percent":
        text = f"{a:.1f} pts"
    elif unit == "score":
        text = f"{a:.1f}"
    elif unit == "count":
        text = f"{a:,.0f}"
    elif unit == "hours":
        text = f"{a:.1f} h"
    else:
        text = f"{a:,.2f}"
    if not any(ch in "123456789" for ch in text):
        return text  # rounds to zero: no sign
    return ("+" if v > 0 else "−") + text
