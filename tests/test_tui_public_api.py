"""The dashboard stands on Textual's public API, so that textual is not pinned to one minor
version: no private module or name of Textual is imported, and the table is no subclass of
`DataTable` (whose private parts it used to override)."""

from __future__ import annotations

import ast
from pathlib import Path

from textual.scroll_view import ScrollView
from textual.widgets import DataTable

from hub.tui.table import LiveTable

TUI = Path(__file__).resolve().parent.parent / "hub" / "tui"


def _private_textual_imports(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("textual"):
            modules = [node.module]
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.Import):
            modules = [a.name for a in node.names if a.name.startswith("textual")]
            names = []
        else:
            continue
        for module in modules:
            if any(part.startswith("_") for part in module.split(".")):
                found.append(f"{path.name}:{node.lineno} {module}")
        found += [f"{path.name}:{node.lineno} {n}" for n in names if n.startswith("_")]
    return found


def test_the_dashboard_imports_no_private_part_of_textual() -> None:
    files = sorted(TUI.glob("*.py"))
    assert files
    assert [hit for path in files for hit in _private_textual_imports(path)] == []


def test_the_table_is_a_scroll_view_of_its_own() -> None:
    assert issubclass(LiveTable, ScrollView)
    assert not issubclass(LiveTable, DataTable)
