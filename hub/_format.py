"""How figures read on a screen: short, aligned, never a misleading zero.

Money is rounded only here, for display; the sums behind it stay exact.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Final

_CENT: Final = Decimal("0.01")
_BLOCKS: Final = "▁▂▃▄▅▆▇█"


def money(amount: Decimal) -> str:
    """$1,234.56; a nonzero amount under half a cent reads "<$0.01", never "$0.00"."""
    if amount == 0:
        return "$0.00"
    if abs(amount) < Decimal("0.005"):
        return "<$0.01" if amount > 0 else ">-$0.01"
    rounded = amount.quantize(_CENT, ROUND_HALF_EVEN)
    sign = "-" if rounded < 0 else ""
    return f"{sign}${abs(rounded):,.2f}"


def money_or_blank(amount: Decimal) -> str:
    """For per-class columns: a class with nothing in it stays quiet."""
    return "" if amount == 0 else money(amount)


def spend(amount: Decimal, unknown_calls: int, *, blank_zero: bool = False) -> str:
    """A dollar figure that may include calls with no price: those never read as $0."""
    if unknown_calls:
        return "unknown" if amount == 0 else f"{money(amount)} + ?"
    return money_or_blank(amount) if blank_zero else money(amount)


def count(n: int, noun: str) -> str:
    """`n` and the noun, plural unless one: "1 commit", "3 commits", "0 sessions"."""
    return f"{n:,} {noun}" if n == 1 else f"{n:,} {noun}s"


def tokens(n: int) -> str:
    if abs(n) < 1000:
        return str(n)
    for unit, size in (("k", 1e3), ("M", 1e6), ("G", 1e9)):
        value = n / size
        if abs(value) < 999.95:
            return f"{value:.1f}{unit}"
    return f"{n / 1e12:.1f}T"


def percent(ratio: float | None) -> str:
    return "–" if ratio is None else f"{ratio * 100:.0f}%"


def age(seconds: float) -> str:
    """12s, 4m, 3h, 2d: how long ago, at a glance."""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600}h"
    return f"{s // 86400}d"


def countdown(seconds: float) -> str:
    """H:MM:SS (or M:SS) until something happens."""
    s = max(0, int(seconds))
    h, rest = divmod(s, 3600)
    m, sec = divmod(rest, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"


def sparkline(values: Sequence[Decimal | int | float], width: int) -> str:
    """A one-line bar chart of `values` squeezed into `width` bins (each bin sums its values).
    Empty bins read as a space so that quiet hours look quiet."""
    if not values or width <= 0:
        return ""
    bins: list[float] = [0.0] * width
    for i, v in enumerate(values):
        bins[i * width // len(values)] += float(v)
    top = max(bins)
    if top <= 0:
        return " " * width
    out = []
    for b in bins:
        if b <= 0:
            out.append(" ")
        else:
            out.append(_BLOCKS[min(len(_BLOCKS) - 1, int(b / top * (len(_BLOCKS) - 1) + 0.5))])
    return "".join(out)
