"""The `--by` words that ask for a cost-per-outcome view instead of event groups.

Apart from `pricing.outcomes` so that a command line can check them without loading the views.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

OUTCOME_KEYS: Final = ("commit", "branch", "pr", "repo")
# what a command line adds to an unknown `--by` word's message
OR_AN_OUTCOME: Final = f"one outcome alone: {', '.join(OUTCOME_KEYS)}"


class OutcomeKeyError(ValueError):
    pass


def check_outcome_keys(keys: Iterable[str]) -> str | None:
    """The one outcome key among `keys`, None when there is none; raises `OutcomeKeyError` for
    an outcome key mixed with others (an outcome view has its own rows)."""
    keys = list(keys)
    found = [k for k in keys if k in OUTCOME_KEYS]
    if not found:
        return None
    if len(keys) != 1:
        raise OutcomeKeyError(
            f"--by {found[0]} goes alone (its rows are outcomes, not event groups): "
            f"use one of {', '.join(OUTCOME_KEYS)} by itself"
        )
    return found[0]
