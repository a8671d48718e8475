"""Run-rate spike: a machine or a profile spending far above its own recent pace.

Spend (API-equivalent) is summed in 5-minute windows per scope. The baseline is the scope's
last 24 hours of *active* windows (those with spend; idle nights do not drag it down), kept as
log-dollars: median and MAD (median absolute deviation). A window spikes when its spend so far
passes

    max(FLOOR, exp(median + Z * max(MAD, MAD_FLOOR) / 0.6745))

i.e. a modified z-score (Iglewicz & Hoaglin) above Z = 3.5 on log spend, above only. The open
window is checked at every call, so a runaway is caught as soon as its spend passes the bar,
not when the window closes. Before MIN_HISTORY active windows (2 hours of activity) only the
absolute rule applies: ABSOLUTE dollars in one window. MAD_FLOOR (0.25 in log units, about a
third of the median at Z) keeps a very steady scope from alerting on ordinary wobble, and FLOOR
($2 a window) keeps small scopes quiet. Windows that spiked stay out of the baseline, so a
runaway never teaches the baseline that it is normal. One finding per happening: a run of
spiking windows, until a window ends below the bar. The baseline is computed again after
every REBASE_EVERY (6) new active windows.
"""

from __future__ import annotations

import math
import statistics
import time
from collections import deque
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Final

from hub.detectors._base import MAX_SCOPES, Call, Recent, dollars, money
from hub.findings import Finding, Severity

KIND: Final = "run_rate_spike"
WINDOW_S: Final = 300
HISTORY: Final = 288  # active windows kept: a day of them
MIN_HISTORY: Final = 24
Z: Final = 3.5
MAD_FLOOR: Final = 0.25
REBASE_EVERY: Final = 6  # new active windows before the baseline is computed again
FLOOR: Final = Decimal(2)
ABSOLUTE: Final = Decimal(25)


@dataclass(slots=True)
class _Scope:
    window: int = -1  # start of the open window (epoch seconds)
    spent: Decimal = Decimal(0)
    history: deque[float] = field(default_factory=lambda: deque(maxlen=HISTORY))
    bar: Decimal = ABSOLUTE  # the open window's threshold
    median: Decimal | None = None
    spiking: bool = False  # the open window passed the bar
    happening: float | None = None  # onset of the run of spiking windows, while it lasts
    fresh: int = 0  # active windows added since the baseline was computed


class RunRateSpike:
    kind = KIND

    def __init__(self) -> None:
        self._scopes: Recent[_Scope] = Recent(_Scope, MAX_SCOPES)
        self._places: dict[tuple[str, str | None], list[str]] = {}

    def observe(self, call: Call) -> list[Finding]:
        if call.cost is None or call.cost <= 0:
            return []
        e = call.event
        place = (e.machine, e.profile)
        scopes = self._places.get(place)
        if scopes is None:  # made once per place, not per call: the hot path of ingest
            if len(self._places) >= MAX_SCOPES:
                self._places.clear()
            scopes = self._places[place] = [f"machine={e.machine}"]
            if e.profile is not None:
                scopes.append(f"machine={e.machine},profile={e.profile}")
        out = []
        for scope in scopes:
            finding = self._add(scope, self._scopes.get(scope), e.ts, call.cost)
            if finding is not None:
                out.append(finding)
        return out

    def _add(self, scope: str, state: _Scope, ts: float, cost: Decimal) -> Finding | None:
        window = int(ts // WINDOW_S) * WINDOW_S
        if window < state.window:
            return None  # a late call of a closed window: the baseline does not go back
        if window > state.window:
            self._close(state, window)
        state.spent += cost
        if state.spiking or state.spent <= state.bar:
            return None
        state.spiking = True
        if state.happening is not None:
            return None  # the same runaway, one window on
        state.happening = float(window)
        median = "none yet" if state.median is None else money(state.median)
        text = (
            f"{scope.replace(',', ' ')} spent {dollars(state.spent)} in the 5 minutes from "
            f"{_clock(window)} UTC, above its bar of {dollars(state.bar)} "
            + (
                f"(its usual 5 minutes: {dollars(state.median)})"
                if state.median is not None
                else "(too little history: the absolute bar)"
            )
        )
        return Finding(
            id=f"{KIND}:{scope}:{window}",
            kind=KIND,
            scope=scope,
            severity=Severity.WARNING,
            start=float(window),
            text=text,
            evidence={
                "window_s": str(WINDOW_S),
                "window_spend_usd": money(state.spent),
                "bar_usd": money(state.bar),
                "baseline_median_usd": median,
                "baseline_windows": str(len(state.history)),
            },
        )

    def _close(self, state: _Scope, window: int) -> None:
        if state.window >= 0:
            if state.spent > 0 and not state.spiking:
                state.history.append(math.log(float(state.spent)))
                state.fresh += 1
            if not state.spiking or window > state.window + WINDOW_S:
                state.happening = None  # ended below the bar (or went idle)
        state.window, state.spent, state.spiking = window, Decimal(0), False
        if len(state.history) < MIN_HISTORY:
            state.bar, state.median = ABSOLUTE, None
            return
        if state.median is not None and state.fresh < REBASE_EVERY:
            return  # a baseline of a day moves slowly: sorting it at every window is waste
        state.fresh = 0
        logs = list(state.history)
        med = statistics.median(logs)
        mad = statistics.median(abs(x - med) for x in logs)
        bar = math.exp(med + Z * max(mad, MAD_FLOOR) / 0.6745)
        state.median = Decimal(repr(math.exp(med))).quantize(Decimal("0.0001"))
        state.bar = max(FLOOR, Decimal(repr(bar)).quantize(Decimal("0.01")))


def _clock(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(ts))
