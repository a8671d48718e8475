"""The digest of the code and tables kept priced reports depend on, kept by their stat: taken
from the index while they stat alike, read again when one changed, never kept for a file
changed within the racy window."""

from __future__ import annotations

import builtins
import time
from pathlib import Path
from typing import Any

import pytest

from node_agent import file_digest
from node_agent.file_digest import contents_digest
from node_agent.scan_index import ScanIndex

RACY_NS = 30_000_000


@pytest.fixture(autouse=True)
def short_racy_window(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(file_digest, "RACY_NS", RACY_NS)


def _settle() -> None:
    time.sleep(2 * RACY_NS / 1e9)


def _opened(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    seen: list[str] = []
    real = builtins.open

    def spy(path: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append(str(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", spy)
    return seen


def _index(tmp_path: Path) -> ScanIndex:
    return ScanIndex.load(tmp_path / "cache")[0]


def test_kept_while_the_files_stat_alike(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = tmp_path / "a.py", tmp_path / "b.toml"
    a.write_text("x = 1\n")
    b.write_text("[t]\n")
    paths = [str(a), str(b)]
    _settle()
    index = _index(tmp_path)
    first = contents_digest(paths, index)
    assert index.save() is None
    opened = _opened(monkeypatch)
    again = _index(tmp_path)
    assert contents_digest(paths, again) == first and not opened
    assert contents_digest(paths, None) == first and len(opened) == 2  # no index: read


def test_a_changed_file_is_read_again(tmp_path: Path) -> None:
    a = tmp_path / "a.py"
    a.write_text("x = 1\n")
    _settle()
    index = _index(tmp_path)
    first = contents_digest([str(a)], index)
    index.save()
    a.write_text("x = 2\n")  # the same size
    _settle()
    changed = contents_digest([str(a)], _index(tmp_path))
    assert changed != first and changed == contents_digest([str(a)], None)


def test_a_young_file_is_not_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a = tmp_path / "a.py"
    a.write_text("x = 1\n")
    index = _index(tmp_path)
    contents_digest([str(a)], index)  # within the racy window of its write
    index.save()
    _settle()
    opened = _opened(monkeypatch)
    contents_digest([str(a)], _index(tmp_path))
    assert opened == [str(a)]


def test_a_file_that_cannot_be_stat_ed_is_read_each_time(tmp_path: Path) -> None:
    gone = str(tmp_path / "gone.toml")
    index = _index(tmp_path)
    first = contents_digest([gone], index)
    assert index.save() is None and not (tmp_path / "cache").exists()  # nothing kept
    (tmp_path / "gone.toml").write_text("[t]\n")
    assert contents_digest([gone], _index(tmp_path)) != first


def test_names_and_contents_both_count(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(b"12")
    b.write_bytes(b"3")
    c = tmp_path / "c"
    c.write_bytes(b"1")
    d = tmp_path / "d"
    d.write_bytes(b"23")
    assert contents_digest([str(a), str(b)], None) != contents_digest([str(c), str(d)], None)
