"""Kept answers at the edges a user meets (found by an outside review): a default home that
becomes one deep inside, a working directory that is gone, an output that cannot be written,
no stderr, and a kernel that refuses memfd. Real console-script processes throughout."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from node_agent import scan_answer, workers
from node_agent.simulate.fleet import generate_fleet
from tests.fleet_harness import child_env
from tests.test_scan_answer import _old_enough
from tests.test_scan_index import _home

NODE_AGENT = str(Path(sys.executable).parent / "node-agent")


def _env(tmp_path: Path, **more: str) -> dict[str, str]:
    return {
        **child_env(tmp_path),
        "HOME": str(tmp_path / "home"),
        "FLEETMETER_CONFIG": str(tmp_path / "no-node.toml"),
        "FLEETMETER_PRICES_DIR": str(tmp_path / "prices"),
        # Every run alike (the environment is part of an answer's key): a run that loads the
        # CLI was not served.
        "PYTHONPROFILEIMPORTTIME": "1",
        **more,
    }


def _scan(env: dict[str, str], *args: str, **run: Any) -> subprocess.CompletedProcess[str]:
    """The scan, its stderr without the import times (kept in `args` of the result)."""
    done = subprocess.run(
        [NODE_AGENT, "scan", "--json", *args],
        env=env,
        text=True,
        timeout=120,
        check=False,
        **{"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, **run},
    )
    imports = [line for line in (done.stderr or "").splitlines() if line.startswith("import time")]
    said = [line for line in (done.stderr or "").splitlines() if line not in imports]
    done.stderr = "".join(f"{line}\n" for line in said)
    done.args = imports
    return done


def _calls(out: str) -> int:
    return int(json.loads(out)["total"]["calls"])


def _served(env: dict[str, str], *args: str, **run: Any) -> subprocess.CompletedProcess[str]:
    """A scan that must be served its kept answer (checked by what it imported)."""
    done = _scan(env, *args, **run)
    assert not any("node_agent.cli" in line for line in done.args), "not served"
    return done


def test_a_default_home_that_becomes_one_deep_inside_is_read(tmp_path: Path) -> None:
    """~/.gemini is a home once tmp/PROJECT/chats exists: two levels below what its own
    stat shows. A kept answer from before must not hide the chats."""
    fleet = tmp_path / "fleet"
    generate_fleet(fleet, seed=5, machines=1, start=datetime(2026, 10, 12, tzinfo=UTC), days=1)
    chats = next((fleet / "spark01" / "gemini" / "tmp").glob("*/chats"))
    project = tmp_path / "home" / ".gemini" / "tmp" / chats.parent.name
    project.mkdir(parents=True)
    env = _env(tmp_path)
    _old_enough(tmp_path / "home")
    before = _scan(env)
    assert before.returncode == 0 and _calls(before.stdout) == 0, before.stderr
    assert _served(env).stdout == before.stdout  # kept
    shutil.move(chats, project / "chats")
    _old_enough(tmp_path / "home")
    after = _scan(env)
    full = _scan(env, "--no-cache")
    assert after.stdout == full.stdout and _calls(full.stdout) > 0


def test_a_scan_from_a_working_directory_that_is_gone(tmp_path: Path) -> None:
    home = _home(tmp_path)
    gone = tmp_path / "gone"
    gone.mkdir()
    env = _env(tmp_path)
    proc = subprocess.run(
        f"cd {gone} && rmdir {gone} && {NODE_AGENT} scan --json {home}",
        shell=True, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert _calls(proc.stdout) > 0


@pytest.mark.parametrize("where", ["closed pipe", "full disk", "no fd 1"])
def test_a_served_answer_that_cannot_be_written_says_so_in_one_line(
    tmp_path: Path, where: str
) -> None:
    home = _home(tmp_path)
    env = _env(tmp_path)
    _old_enough(home)
    assert _scan(env, str(home)).returncode == 0
    assert _served(env, str(home)).returncode == 0
    run: dict[str, Any] = {}
    if where == "full disk":
        if not Path("/dev/full").exists():
            pytest.skip("no /dev/full here")
        run["stdout"] = open("/dev/full", "w")  # noqa: SIM115 (closed below)
    elif where == "no fd 1":
        run["stdout"] = None
        run["preexec_fn"] = lambda: os.close(1)
    else:
        read_end, write_end = os.pipe()
        os.close(read_end)
        run["stdout"] = write_end
    try:
        proc = _served(env, str(home), **run)
    finally:
        if isinstance(run.get("stdout"), int):
            os.close(run["stdout"])
        elif run.get("stdout") is not None:
            run["stdout"].close()
    assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr
    assert proc.returncode == 1 and proc.stderr.strip().count("\n") == 0, proc.stderr


def test_a_full_scan_without_stdout_says_so_in_one_line(tmp_path: Path) -> None:
    home = _home(tmp_path)
    proc = _scan(
        _env(tmp_path), "--no-cache", str(home), stdout=None, preexec_fn=lambda: os.close(1)
    )
    assert "Traceback" not in proc.stderr and "unexpected error" not in proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and "standard output" in proc.stderr
    assert proc.returncode == 1


def test_a_warning_with_no_stderr_loses_nothing(tmp_path: Path) -> None:
    """A broken installed table is logged; with fd 2 closed that must not end the scan."""
    home = _home(tmp_path)
    prices = tmp_path / "prices"
    prices.mkdir()
    (prices / "anthropic.toml").write_text("garbage = [\n")
    proc = _scan(
        _env(tmp_path), "--no-cache", str(home), stderr=None, preexec_fn=lambda: os.close(2)
    )
    assert proc.returncode == 0
    assert _calls(proc.stdout) > 0


def test_a_refused_memfd_falls_back_to_a_file(monkeypatch: pytest.MonkeyPatch) -> None:
    def refused(*_: object, **__: object) -> int:
        raise OSError(errno.ENOSYS, "Function not implemented")

    monkeypatch.setattr(os, "memfd_create", refused, raising=False)
    with workers._unnamed_file() as fh:
        fh.write(b"results")
        fh.seek(0)
        assert fh.read() == b"results"


def test_an_answer_served_lately_outlives_answers_made_before_it_was_served(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfdbinary: pytest.CaptureFixture[bytes]
) -> None:
    """Only the MAX_KEPT answers used or made last are kept: one served now is not pruned
    for being made first."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    made = time.time_ns() - 10**12  # made long ago, one a second apart, the first oldest
    for query in range(scan_answer.MAX_KEPT):
        scan_answer.keep(["scan", f"q{query}"], [], f"answer {query}\n".encode())
        stamp = made + query * 10**9
        os.utime(
            scan_answer._path_of(scan_answer.answer_key(["scan", f"q{query}"])), ns=(stamp, stamp)
        )
    assert scan_answer.serve(["scan", "q0"])
    assert capfdbinary.readouterr().out == b"answer 0\n"
    scan_answer.keep(["scan", "new"], [], b"new\n")  # one too many: the least lately used goes
    assert scan_answer.serve(["scan", "q0"])
    assert not scan_answer.serve(["scan", "q1"])
    assert len(os.listdir(scan_answer.answers_dir())) == scan_answer.MAX_KEPT
