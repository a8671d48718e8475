"""Kept answers (`scan_answer`): a repeat scan with nothing changed prints the kept output, and
whatever changed between scans (appends, truncations, renames, deletions, new files, an
installed price table, fleetmeter's own code) the printed answer equals a `--no-cache` read."""

from __future__ import annotations

import importlib
import subprocess
import sys
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from node_agent import entry, scan_answer
from node_agent.cli import main as full_main
from pricing import PriceBook
from pricing.installed import install_table
from tests.fleet_harness import child_env
from tests.test_prices_install import table
from tests.test_scan_index import NAMES, _home, apply, ops, usage_line

VIEWS = (["--json"], [], ["--json", "--by", "session,model"], ["--by", "project,role"])
# A test's changes are milliseconds apart: a smaller racy window, waited out before each scan.
RACY_NS = 30_000_000
# Installed tables that price the test's Sonnet calls otherwise than the shipped table.
SONNET = "claude-sonnet-4-5"
PRICES = ({"input": "2", "output": "10"}, {"input": "5", "output": "30"})


class Scans:
    """Scans run as the console script runs them, in this process: `entry.main`."""

    def __init__(self, capsys: pytest.CaptureFixture[bytes]) -> None:
        self.capsys = capsys
        self.served: list[bool] = []
        self.changed_ns = time.time_ns()

    def changed(self) -> None:
        self.changed_ns = time.time_ns()

    def aged(self) -> None:
        # Not an assertion: a kept answer needs its files older than the racy window.
        while time.time_ns() - self.changed_ns < 2 * RACY_NS:
            time.sleep(0.005)

    def run(self, argv: list[str]) -> tuple[int, bytes]:
        self.aged()
        self.capsys.readouterr()
        code = entry.main(argv)
        return code, self.capsys.readouterr().out

    def full(self, argv: list[str]) -> tuple[int, bytes]:
        self.capsys.readouterr()
        code = full_main([*argv, "--no-cache"])
        return code, self.capsys.readouterr().out


def make_scans(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[bytes]
) -> Scans:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    monkeypatch.setenv("FLEETMETER_PRICES_DIR", str(tmp_path / "prices"))
    monkeypatch.setenv("FLEETMETER_CONFIG", str(tmp_path / "no-node.toml"))
    monkeypatch.setattr(scan_answer, "RACY_NS", RACY_NS)
    PriceBook.reload_default()
    found = Scans(capsys)
    real = scan_answer.serve

    def spy(argv: Any) -> bool:
        served = real(argv)
        found.served.append(served)
        return served

    monkeypatch.setattr(scan_answer, "serve", spy)
    return found


@pytest.fixture
def scans(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsysbinary: pytest.CaptureFixture[bytes]
) -> Iterator[Scans]:
    yield make_scans(tmp_path, monkeypatch, capsysbinary)
    PriceBook.reload_default()  # the tables as the rest of the session has them


def _old_enough(path: Path) -> None:
    """Wait until every file below `path` is older than a real scan's racy window (a ctime
    cannot be set back): only then does a scan in another process keep its answer."""
    newest = max(p.stat().st_ctime_ns for p in [path, *path.rglob("*")])
    while time.time_ns() - newest < scan_answer.RACY_NS + 100_000_000:
        time.sleep(0.05)


def sonnet_table(variant: int) -> str:
    rates = PRICES[variant]
    made = {
        "input": rates["input"],
        "output": rates["output"],
        "reasoning": rates["output"],
        "cache_read": str(Decimal(rates["input"]) / 10),
        "cache_write_5m": str(Decimal(rates["input"]) * Decimal("1.25")),
        "cache_write_1h": str(Decimal(rates["input"]) * 2),
    }
    text = table(made, model=SONNET, start="2026-01-01", until=None)
    return text.replace("Claude Opus 4.5", "Claude Sonnet 4.5")


def _install_prices(folder: Path, variant: int) -> None:
    source = folder.parent / "sonnet.toml"  # installed in place of the last one
    source.write_text(sonnet_table(variant))
    install_table(source, folder)
    PriceBook.reload_default()  # what a new process reads


def _code_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A module loaded by this process, standing for fleetmeter's code: a new version of it
    is a new file."""
    folder = tmp_path / "code"
    folder.mkdir(exist_ok=True)
    module = folder / f"fleetmeter_code_probe_{folder.parent.name}.py"
    module.write_text("VERSION = 0\n")
    monkeypatch.syspath_prepend(str(folder))
    importlib.import_module(module.stem)
    return module


steps = st.one_of(
    ops,
    st.tuples(st.just("prices"), st.integers(0, 1)),
    st.tuples(st.just("code"), st.integers(1, 99)),
    st.tuples(st.just("view"), st.integers(0, len(VIEWS) - 1)),
)


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(st.lists(steps, min_size=1, max_size=8))
def test_a_kept_answer_always_equals_a_full_read(
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
    capsysbinary: pytest.CaptureFixture[bytes],
    steps: list[tuple[Any, ...]],
) -> None:
    root = tmp_path_factory.mktemp("answers")
    with monkeypatch.context() as patch:
        scans = make_scans(root, patch, capsysbinary)
        home = _home(root)
        module = _code_module(root, patch)
        view = VIEWS[0]
        for step in steps:
            if step[0] == "prices":
                _install_prices(root / "prices", step[1])
            elif step[0] == "code":
                module.write_text(f"VERSION = {step[1]}\n")
            elif step[0] == "view":
                view = VIEWS[step[1]]
            else:
                apply(home, step)
            scans.changed()
            argv = ["scan", *view, str(home)]
            scans.served.clear()
            first = scans.run(argv)
            again = scans.run(argv)
            assert first == again == scans.full(argv), step
            # A clean answer is kept: the scan after it, with nothing changed, is served.
            assert scans.served[1] == (first[0] == 0), step
            if step[0] in ("prices", "code"):
                assert scans.served[0] is False, step
    PriceBook.reload_default()


def test_nothing_changed_is_served_and_each_change_is_read(scans: Scans, tmp_path: Path) -> None:
    home = _home(tmp_path)
    scans.changed()
    argv = ["scan", "--json", str(home)]
    first = scans.run(argv)
    assert scans.served == [False] and first[0] == 0
    assert scans.run(argv) == first and scans.served[-1] is True
    with (home / "projects" / NAMES[0]).open("ab") as fh:
        fh.write(usage_line(70, 5) + b"\n")
    scans.changed()
    grown = scans.run(argv)
    assert scans.served[-1] is False and grown != first and grown == scans.full(argv)
    assert scans.run(argv) == grown and scans.served[-1] is True
    assert scans.run([*argv, "--no-cache"]) == grown and scans.served[-1] is False


def test_a_damaged_answer_is_discarded_with_one_warning_never_printed(
    scans: Scans, tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    home = _home(tmp_path)
    scans.changed()
    argv = ["scan", str(home)]
    want = scans.run(argv)
    (kept,) = (tmp_path / "xdg-cache" / "fleetmeter" / scan_answer.FOLDER).iterdir()
    for damage in (
        lambda b: b[:-1] + bytes([b[-1] ^ 1]),  # one bit of the body
        lambda b: b[: len(b) // 2],  # cut short
        lambda b: b"not an answer",
    ):
        kept.write_bytes(damage(kept.read_bytes()))
        scans.changed()
        scans.aged()
        code = entry.main(argv)
        out, err = capsysbinary.readouterr()
        assert (code, out) == want
        assert err.count(b"\n") == 1 and b"damaged" in err and str(kept).encode() in err
        assert scans.run(argv) == want and scans.served[-1] is True  # kept anew


def test_a_change_during_the_scan_keeps_no_answer(scans: Scans, tmp_path: Path) -> None:
    """Files written within the racy window of a scan's start may not show the write in their
    stat: no answer is kept from them."""
    home = _home(tmp_path)
    with (home / "projects" / NAMES[0]).open("ab") as fh:
        fh.write(usage_line(71, 5) + b"\n")
    assert entry.main(["scan", "--json", str(home)]) == 0  # at once: younger than the window
    assert not (tmp_path / "xdg-cache" / "fleetmeter" / scan_answer.FOLDER).exists()


def test_an_installed_price_table_is_read_by_the_console_script(tmp_path: Path) -> None:
    """Real processes: `node-agent scan` twice (the second served: it never loads the CLI),
    `fleet-hub prices install` in between, and the scan after it prices with the new table."""
    home = _home(tmp_path)
    env = {**child_env(tmp_path), "FLEETMETER_PRICES_DIR": str(tmp_path / "prices")}
    bin_dir = Path(sys.executable).parent
    argv = [str(bin_dir / "node-agent"), "scan", "--json", "--by", "model", str(home)]

    def scan(*extra: str) -> tuple[str, bool]:
        done = subprocess.run(
            [*argv, *extra],
            env={**env, "PYTHONPROFILEIMPORTTIME": "1"},
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        return done.stdout, "node_agent.cli" not in done.stderr

    _old_enough(home)
    first, served = scan()
    assert not served
    again, served = scan()
    assert again == first and served
    source = tmp_path / "sonnet.toml"
    source.write_text(sonnet_table(0))
    install = [str(bin_dir / "fleet-hub"), "prices", "install", str(source)]
    subprocess.run(install, env=env, check=True, capture_output=True, timeout=120)
    priced, served = scan()
    assert not served and priced != first
    assert priced == scan("--no-cache")[0]


def test_concurrent_scans_each_print_the_answer_and_keep_a_whole_one(tmp_path: Path) -> None:
    home = _home(tmp_path)
    env = child_env(tmp_path)
    _old_enough(home)
    argv = [str(Path(sys.executable).parent / "node-agent"), "scan", "--json", str(home)]
    procs = [
        subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(4)
    ]
    outs = [proc.communicate(timeout=120) for proc in procs]
    assert all(proc.returncode == 0 for proc in procs)
    assert len({out for out, _ in outs}) == 1 and all(err == b"" for _, err in outs)
    folder = tmp_path / "xdg-cache" / "fleetmeter" / scan_answer.FOLDER
    assert [p.name for p in folder.iterdir() if p.name.endswith(".partial")] == []
    done = subprocess.run(argv, env=env, capture_output=True, timeout=120, check=True)
    assert done.stdout == outs[0][0] and done.stderr == b""


def test_new_rules_for_the_zone_asked_for_are_read(
    scans: Scans, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A zone's rules (tzdata updated) are a dependency of a --tz answer: the days move."""
    import shutil
    import zoneinfo

    folder = tmp_path / "zones"
    (folder / "Test").mkdir(parents=True)
    zone = folder / "Test" / "Zone"
    shutil.copy(Path(zoneinfo.TZPATH[0]) / "Asia" / "Tokyo", zone)
    zoneinfo.reset_tzpath(to=[str(folder)])
    monkeypatch.setattr(zoneinfo, "TZPATH", (str(folder),))
    try:
        home = _home(tmp_path)
        for name in NAMES[::2]:  # calls late in the day: Tokyo and Los Angeles days differ
            path = home / "projects" / name
            path.write_bytes(path.read_bytes().replace(b"T10:00:00", b"T20:00:00"))
        scans.changed()
        argv = ["scan", "--json", "--tz", "Test/Zone", str(home)]
        tokyo = scans.run(argv)
        assert scans.run(argv) == tokyo and scans.served[-1] is True
        shutil.copy(Path("/usr/share/zoneinfo/America/Los_Angeles"), zone)
        zoneinfo.ZoneInfo.clear_cache()  # what a new process would read
        scans.changed()
        moved = scans.run(argv)
        assert scans.served[-1] is False and moved != tokyo and moved == scans.full(argv)
    finally:
        zoneinfo.reset_tzpath()
        zoneinfo.ZoneInfo.clear_cache()
