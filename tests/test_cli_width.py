"""The width help text is wrapped to, found without shutil, is the one shutil gives argparse."""

from __future__ import annotations

import shutil

import pytest

from shared.cli import OneLineParser, terminal_columns


@pytest.mark.parametrize("columns", [None, "", "abc", "0", "-3", "57", "200"])
def test_the_terminal_width_is_shutils(
    monkeypatch: pytest.MonkeyPatch, columns: str | None
) -> None:
    if columns is None:
        monkeypatch.delenv("COLUMNS", raising=False)
    else:
        monkeypatch.setenv("COLUMNS", columns)
    assert terminal_columns() == shutil.get_terminal_size().columns


def test_help_is_wrapped_to_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "40")
    parser = OneLineParser(prog="p", description="word " * 30)
    lines = parser.format_help().splitlines()
    assert max(len(line) for line in lines) <= 38  # argparse leaves two columns
    assert len(lines) > 5
