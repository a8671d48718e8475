"""`[[budgets]]` in hub.toml: read with the rest of the config (strict, one-line errors), and
added or removed with tomlkit so that the operator's comments and layout survive.

A running hub reloads its budgets when the file changes, so an edit by hand, by
`fleet-hub budget add|rm` without a hub, or through the API all take effect the same way.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import tomlkit
from tomlkit.exceptions import TOMLKitError

from hub.budgets.model import Budget, BudgetError, check_budgets, parse_budget
from shared.config import ConfigError


def parse_budgets(value: object, where: str) -> tuple[Budget, ...]:
    """The `budgets` array of tables of a hub.toml (ConfigError naming the budget and key)."""
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(t, dict) for t in value):
        raise ConfigError(f"{where}: 'budgets' must be an array of tables ([[budgets]])")
    try:
        return tuple(check_budgets(parse_budget(table) for table in value))
    except BudgetError as exc:
        raise ConfigError(f"{where}: [[budgets]] {exc}") from None


def _load(path: Path) -> tomlkit.TOMLDocument:
    try:
        return tomlkit.parse(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except TOMLKitError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None


def _save(path: Path, doc: tomlkit.TOMLDocument) -> None:
    """Atomically: a hub that reloads on change never reads half a file."""
    text = tomlkit.dumps(doc)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, path.stat().st_mode & 0o777)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _tables(doc: tomlkit.TOMLDocument) -> Any:
    budgets = doc.get("budgets")
    if budgets is None:
        budgets = tomlkit.aot()
        doc.append("budgets", budgets)
    return budgets


def add_budget(path: Path, budget: Budget, existing: Sequence[Budget]) -> None:
    """Append `budget` (or replace the one of its name) after checking it fits the others."""
    others = [b for b in existing if b.name != budget.name]
    try:
        check_budgets([*others, budget])
    except BudgetError as exc:
        raise ConfigError(str(exc)) from None
    doc = _load(path)
    tables = _tables(doc)
    table = tomlkit.table()
    for key, value in budget.to_table().items():
        table.add(key, value)
    for i, item in enumerate(tables):
        if item.get("name") == budget.name:
            tables[i] = table
            break
    else:
        tables.append(table)
    _save(path, doc)


def remove_budget(path: Path, name: str) -> bool:
    """Remove the budget named `name`; False when there is none."""
    doc = _load(path)
    tables = doc.get("budgets")
    if tables is None:
        return False
    for i, item in enumerate(tables):
        if item.get("name") == name:
            del tables[i]
            if len(tables) == 0:
                del doc["budgets"]
            _save(path, doc)
            return True
    return False
