"""The parsed-table cache: same tables as a fresh parse, never stale, never fatal."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from pricing._cache import cache_dir, cached_tables
from pricing._tables import load_texts

TABLES = Path(__file__).resolve().parent.parent / "pricing" / "tables"


def texts() -> list[tuple[str, str]]:
    return [(p.name, p.read_text()) for p in sorted(TABLES.glob("*.toml"))]


@pytest.fixture(autouse=True)
def own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    return tmp_path / "fleetmeter"


def counting_parse(calls: list[int]):  # type: ignore[no-untyped-def]
    def parse(items):  # type: ignore[no-untyped-def]
        calls.append(1)
        return load_texts(items)

    return parse


def test_second_load_comes_from_the_cache_and_equals_a_parse(own_cache: Path) -> None:
    calls: list[int] = []
    first = cached_tables(texts(), counting_parse(calls))
    second = cached_tables(texts(), counting_parse(calls))
    assert calls == [1]
    assert second == first == load_texts(texts())
    assert cache_dir() == own_cache and len(list(own_cache.glob("*.pickle"))) == 1


def test_an_edited_table_is_parsed_again(own_cache: Path) -> None:
    calls: list[int] = []
    cached_tables(texts(), counting_parse(calls))
    edited = [(n, t.replace('input = "3"', 'input = "3.5"', 1)) for n, t in texts()]
    assert edited != texts()
    cached_tables(edited, counting_parse(calls))
    assert calls == [1, 1]


def test_a_corrupt_cache_is_ignored(own_cache: Path) -> None:
    calls: list[int] = []
    cached_tables(texts(), counting_parse(calls))
    (blob,) = own_cache.glob("*.pickle")
    blob.write_bytes(b"garbage")
    assert cached_tables(texts(), counting_parse(calls)) == load_texts(texts())
    assert calls == [1, 1]


def test_an_unwritable_cache_dir_only_costs_a_parse(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a dir")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    calls: list[int] = []
    assert cached_tables(texts(), counting_parse(calls)) == load_texts(texts())
    assert cached_tables(texts(), counting_parse(calls)) == load_texts(texts())
    assert calls == [1, 1]


def test_a_new_cache_file_replaces_the_stale_ones(own_cache: Path) -> None:
    calls: list[int] = []
    cached_tables(texts(), counting_parse(calls))
    edited = [(name, text + "\n# edited\n") for name, text in texts()]
    cached_tables(edited, counting_parse(calls))
    assert len(list(cache_dir().glob("price-tables-*.pickle"))) == 1
    cached_tables(edited, counting_parse(calls))
    assert len(calls) == 2  # the kept file is the edited tables'


def test_what_a_scan_killed_while_writing_left_is_swept_at_the_next_write(
    own_cache: Path,
) -> None:
    own_cache.mkdir(parents=True)
    left, writing = own_cache / ".price-tables-k1ll3d", own_cache / ".price-tables-n0w"
    for partial in (left, writing):
        partial.write_bytes(b"half a pickle")
    long_ago = time.time() - 3600
    os.utime(left, (long_ago, long_ago))
    cached_tables(texts(), load_texts)  # a miss: the cache is written
    assert not left.exists()
    assert writing.exists()  # (another scan's, being written now)
    assert len(list(own_cache.glob("price-tables-*.pickle"))) == 1
