"""`node-agent scan` against what an adversarial review put in its way (hostile cache files,
kills, odd environments): real console-script processes, real files."""

from __future__ import annotations

import os
from pathlib import Path

from tests.test_scan_answer import _old_enough
from tests.test_scan_answer_edges import _env, _scan, _served
from tests.test_scan_index import _home


def _cache(tmp_path: Path) -> Path:
    return tmp_path / "xdg-cache" / "fleetmeter"


def test_a_pipe_or_a_device_in_a_kept_answers_place_neither_blocks_nor_fills(
    tmp_path: Path,
) -> None:
    """An answer file is read only when it is a regular file: opening a FIFO blocked the scan
    for good, and /dev/zero was read until memory ran out."""
    home = _home(tmp_path)
    env = _env(tmp_path)
    _old_enough(tmp_path)
    want = _scan(env, str(home))
    assert want.returncode == 0 and not want.stderr, want.stderr
    assert _served(env, str(home)).stdout == want.stdout
    (kept,) = (_cache(tmp_path) / "answers").iterdir()
    for hostile in (lambda: os.mkfifo(kept), lambda: kept.symlink_to("/dev/zero")):
        kept.unlink()
        hostile()
        done = _scan(env, str(home))
        assert (done.returncode, done.stdout, done.stderr) == (0, want.stdout, "")


def test_a_pipe_or_a_device_in_the_price_cache_neither_blocks_nor_fills(tmp_path: Path) -> None:
    """The parsed price tables' cache is read only when it is a regular file (as above)."""
    home = _home(tmp_path)
    env = _env(tmp_path)
    want = _scan(env, "--no-cache", str(home))
    assert want.returncode == 0 and not want.stderr, want.stderr
    (tables,) = _cache(tmp_path).glob("price-tables-*.pickle")
    for hostile in (lambda: os.mkfifo(tables), lambda: tables.symlink_to("/dev/zero")):
        tables.unlink()
        hostile()
        done = _scan(env, "--no-cache", str(home))
        assert (done.returncode, done.stdout, done.stderr) == (0, want.stdout, "")
        assert tables.is_file() and not tables.is_symlink()  # written anew in its place
