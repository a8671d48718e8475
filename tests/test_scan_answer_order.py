"""What a kept answer's check costs: its dependencies are checked last changed first (after an
append to the transcript written last, the check stops at its first stat), and a served scan
loads only a few modules."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from node_agent import scan_answer
from tests.fleet_harness import child_env
from tests.test_scan_answer import _old_enough
from tests.test_scan_index import _home


def test_the_newest_dependency_is_checked_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    tree = tmp_path / "projects"
    tree.mkdir()
    old = time.time() - 3600
    for n in range(20):
        (tree / f"s{n:02}.jsonl").write_bytes(b"{}\n")
    for n in range(20):
        at = old + 60 * (n if n != 7 else 50)  # s07 written last
        os.utime(tree / f"s{n:02}.jsonl", (at, at))
    started = time.time_ns() + 10 * scan_answer.RACY_NS  # (their ctimes are now)
    found: dict[str, scan_answer.Signature] = {}
    assert scan_answer.gathered([str(tree)], [], started, found)
    deps = scan_answer.ordered(found)
    assert len(deps) == 21
    assert deps[0][0] == str(tree)  # the folder: made now
    assert deps[1][0] == str(tree / "s07.jsonl")
    argv = ["scan", str(tree)]
    scan_answer.keep(argv, deps, "kept\n")
    with (tree / "s07.jsonl").open("ab") as fh:
        fh.write(b"{}\n")
    stats: list[str] = []
    real = scan_answer.signature

    def spy(path: str) -> scan_answer.Signature:
        stats.append(path)
        return real(path)

    monkeypatch.setattr(scan_answer, "signature", spy)
    assert scan_answer.serve(argv) is False
    assert len(stats) <= 2  # not the other 19 first


def test_a_served_scan_loads_neither_typing_nor_the_cli(tmp_path: Path) -> None:
    """A real console-script process served its kept answer: the few modules it loads besides
    the interpreter's own (typing, with contextlib and warnings, cost ~3 ms of ~30)."""
    home = _home(tmp_path)
    env = {**child_env(tmp_path), "PYTHONPROFILEIMPORTTIME": "1"}
    argv = [str(Path(sys.executable).parent / "node-agent"), "scan", "--json", str(home)]

    def loaded() -> set[str]:
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        return {line.split("|")[-1].strip() for line in done.stderr.splitlines() if "|" in line}

    _old_enough(home)
    assert "node_agent.cli" in loaded()  # the first scan keeps its answer
    served = loaded()
    assert "node_agent.scan_answer" in served and "node_agent.cli" not in served
    assert {"typing", "collections.abc"} & served == set()


def test_the_node_agent_script_loads_no_re(tmp_path: Path) -> None:
    """The installed `node-agent` is scripts/node-agent, not pip's wrapper of an entry point,
    which imports `re` first (~5 ms: a third of a served scan's)."""
    home = _home(tmp_path)
    env = {**child_env(tmp_path), "PYTHONPROFILEIMPORTTIME": "1"}
    script = Path(__file__).resolve().parent.parent / "scripts" / "node-agent"
    args = [str(script), "scan", "--json", str(home)]

    def loaded(*flags: str) -> set[str]:
        done = subprocess.run(
            [sys.executable, *flags, *args], env=env, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr
        return {line.split("|")[-1].strip() for line in done.stderr.splitlines() if "|" in line}

    _old_enough(home)
    loaded()
    # Without site: an editable install's finder, loaded by a .pth file, imports `re` itself
    # (the served scan needs nothing from site-packages).
    served = loaded("-S")
    assert "node_agent.scan_answer" in served and "node_agent.cli" not in served
    assert "re" not in served
