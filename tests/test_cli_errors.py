"""Both console scripts as installed, fed bad input: each case ends with one line on stderr that
names the problem, the right exit status (2 bad usage or config, 1 runtime failure) and never a
traceback. Real processes, real files, a real (corrupt) SQLite store."""

from __future__ import annotations

import os
import shlex
import socket
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from hub.config import init_hub
from hub.store import DB_FILE, Store
from node_agent.simulate.fleet import generate_fleet

BIN = Path(sys.executable).parent
TIMEOUT = 60.0  # generous: the machine is shared; a case that hangs fails instead of blocking


@pytest.fixture(scope="module")
def place(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A working dir with bad config files, a hub with a corrupt store, one with a good store."""
    root = tmp_path_factory.mktemp("cli-errors")
    (root / "home").mkdir()
    (root / "latin.toml").write_bytes(b'node = "caf\xe9"\n')  # Latin-1, not UTF-8
    (root / "empty.toml").write_text("")
    (root / "dir.toml").mkdir()
    os.mkfifo(root / "fifo.toml")  # reading it blocked the command for good
    (root / "zero.toml").symlink_to("/dev/zero")  # reading it filled memory
    (root / "bad.toml").write_text("node = \n")
    (root / "wrongtype.toml").write_text("node = 3\n")
    (root / "agent-home").mkdir()
    generate_fleet(
        root / "fleet", seed=5, machines=1, start=datetime(2026, 10, 12, tzinfo=UTC), days=1
    )
    for name in ("corrupt", "good"):
        init_hub(
            root / name / "hub.toml",
            overrides={
                "data_dir": "data",
                "events": "tcp://127.0.0.1:0",
                "commands": "tcp://127.0.0.1:0",
                "advertise": False,
            },
        )
    hubs_with_bad_files(root)
    nodes_with_bad_files(root)
    (root / "corrupt" / "data").mkdir()
    (root / "corrupt" / "data" / DB_FILE).write_bytes(b"this is not an SQLite database\n" * 64)
    with Store.in_dir(root / "good" / "data"):
        pass
    yield root


def hubs_with_bad_files(root: Path) -> None:
    """Hub configs naming files it cannot use: TLS files missing or not PEM, a data dir that
    cannot exist, an ipc:// socket in a directory that does not exist."""
    tls = {"events": "tls+tcp://127.0.0.1:0", "commands": "tls+tcp://127.0.0.1:0"}
    plain = {"events": "tcp://127.0.0.1:0", "commands": "tcp://127.0.0.1:0"}
    for name, overrides in {
        "nocert": {**tls, "tls_cert_key_file": "missing.pem"},
        "junkcert": {**tls, "tls_cert_key_file": "hub.toml"},
        "nodatadir": {**plain, "data_dir": "/proc/no-such-dir"},
        "badipc": {"events": "ipc:///proc/no-such-dir/ev", "commands": "tcp://127.0.0.1:0"},
    }.items():
        init_hub(root / name / "hub.toml", overrides={"advertise": False, **overrides})


def nodes_with_bad_files(root: Path) -> None:
    """Node configs that would run but for a file: a missing hub CA, a state dir that cannot
    be made, a file where the state dir should be, a directory where the outbox should be."""
    key = root / "run-node.key"
    key.write_text("ab" * 32 + "\n")
    key.chmod(0o600)
    (root / "a-file").write_text("")
    (root / "outbox-dir" / "outbox.db").mkdir(parents=True)
    plain = 'events = "tcp://127.0.0.1:1"\ncommands = "tcp://127.0.0.1:2"\n'
    tls = plain.replace("tcp://", "tls+tcp://") + 'ca_file = "missing-ca.pem"\nserver_name = "h"\n'
    for name, state_dir, hub in (
        ("tls-node", "tls-node-state", tls),
        ("proc-node", "/proc/no-such-dir", plain),
        ("file-node", "a-file", plain),
        ("outbox-node", "outbox-dir", plain),
    ):
        (root / f"{name}.toml").write_text(
            f'node = "n1"\nstate_dir = "{state_dir}"\n[hub]\n{hub}key_file = "{key}"\n'
        )


def run(
    place: Path, *argv: str, stdout: int | None = subprocess.PIPE
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XDG_", "FLEETMETER_"))}
    env["HOME"] = str(place / "home")
    script, *args = argv
    return subprocess.run(
        [str(BIN / script), *args],
        cwd=place,
        env=env,
        stdout=stdout,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


CASES = [
    # node-agent: config files
    ("node-agent scan --config latin.toml .", 2, "latin.toml: not UTF-8 text"),
    ("node-agent run --config latin.toml", 2, "latin.toml: not UTF-8 text"),
    ("node-agent scan --config empty.toml .", 2, "empty.toml: the file is empty"),
    ("node-agent run --config empty.toml", 2, "empty.toml: the file is empty"),
    ("node-agent scan --config dir.toml .", 2, "dir.toml: is a directory"),
    ("node-agent run --config dir.toml", 2, "dir.toml: is a directory"),
    ("node-agent scan --config bad.toml .", 2, "bad.toml: not valid TOML"),
    ("node-agent run --config fifo.toml", 2, "fifo.toml: not a regular file"),
    ("fleet-hub report --config zero.toml", 2, "zero.toml: not a regular file"),
    ("node-agent run --config wrongtype.toml", 2, "'node' must be a non-empty string"),
    ("node-agent run --config missing.toml", 2, "missing.toml: no such file"),
    # node-agent scan: arguments
    ("node-agent scan --since 2026-02-02 --until 2026-01-01 .", 2, "is after --until 2026-01-01"),
    ("node-agent scan --jobs 0 .", 2, "--jobs: must be 1 or more, not 0"),
    ("node-agent scan --jobs -3 .", 2, "--jobs: must be 1 or more, not -3"),
    ("node-agent scan --jobs two .", 2, "--jobs: 'two' is not a whole number"),
    ("node-agent scan --since 2026-13-01 .", 2, "'2026-13-01' is not a day"),
    ("node-agent scan --tz Mars/Olympus .", 2, "unknown time zone"),
    ("node-agent frobnicate", 2, "invalid choice: 'frobnicate'"),
    # node-agent init and install-service
    ("node-agent init --config n.toml --profile a:codex:no-such-home", 2, "does not exist"),
    (
        "node-agent init --config n.toml --profile a:claude-code:agent-home:subscription:max_99x",
        2,
        "unknown claude-code plan 'max_99x'",
    ),
    ("node-agent init --config n.toml --node 'bad name!'", 2, "'bad name!' is not a node name"),
    ("node-agent init --config dir.toml", 2, "dir.toml: is a directory"),
    ("node-agent init --config latin.toml", 2, "latin.toml: not UTF-8 text"),
    ("node-agent init --config n.toml --key-file nokey", 1, "nokey: No such file or directory"),
    ("node-agent install-service --print --config missing.toml", 2, "missing.toml: no such file"),
    ("node-agent install-service --print --config empty.toml", 2, "empty.toml: the file is empty"),
    # fleet-hub: config and store
    ("fleet-hub report --config latin.toml", 2, "latin.toml: not UTF-8 text"),
    ("fleet-hub report --config empty.toml", 2, "empty.toml: the file is empty"),
    ("fleet-hub report --config dir.toml", 2, "dir.toml: is a directory"),
    ("fleet-hub --config latin.toml", 2, "latin.toml: not UTF-8 text"),
    ("fleet-hub report", 2, "run `fleet-hub init`"),
    ("fleet-hub serve", 2, "run `fleet-hub init`"),
    ("fleet-hub enroll spark01", 2, "run `fleet-hub init`"),
    ("fleet-hub report --config corrupt/hub.toml", 1, "not a usable hub database"),
    ("fleet-hub serve --config corrupt/hub.toml", 1, "not a usable hub database"),
    (
        "fleet-hub report --config good/hub.toml --since 2026-02-02 --until 2026-01-01",
        2,
        "--since 2026-02-02 is after --until 2026-01-01",
    ),
    ("fleet-hub enroll --config good/hub.toml 'bad name!'", 2, "'bad name!' is not a node name"),
    ("fleet-hub init --config good/hub.toml", 2, "already exists"),
    (
        "fleet-hub init --config new/hub.toml --data-dir /proc/nope",
        2,
        "cannot use --data-dir /proc/nope: No such file or directory",
    ),
    # fleet-hub serve: files and addresses it cannot use are named, not "a bug"
    ("fleet-hub serve --config nocert/hub.toml", 2, "cannot read hub certificate+key file"),
    ("fleet-hub serve --config junkcert/hub.toml", 2, "TLS files not usable"),
    ("fleet-hub serve --config nodatadir/hub.toml", 1, "cannot use data_dir /proc/no-such-dir"),
    ("fleet-hub serve --config badipc/hub.toml", 1, "cannot listen on ipc:///proc/no-such-dir"),
    ("node-agent run --config tls-node.toml", 2, "missing-ca.pem: cannot read hub CA file"),
    ("node-agent run --config proc-node.toml", 1, "cannot use state_dir /proc/no-such-dir: No"),
    ("node-agent run --config file-node.toml", 1, "cannot use state_dir a-file: not a directory"),
    ("node-agent run --config outbox-node.toml", 1, "cannot open outbox outbox-dir/outbox.db"),
    # fleet-hub demo: arguments, checked before anything starts
    ("fleet-hub demo --machines 0", 2, "--machines: must be 1 or more, not 0"),
    ("fleet-hub demo --machines -2", 2, "--machines: must be 1 or more, not -2"),
    ("fleet-hub demo --machines 100", 2, "machines must be between 1 and 99"),
    ("fleet-hub demo --pace 0", 2, "--pace: must be a number above 0, not 0"),
    ("fleet-hub demo --pace -1", 2, "--pace: must be a number above 0, not -1"),
    ("fleet-hub demo --pace nan", 2, "--pace: must be a number above 0, not nan"),
    ("fleet-hub demo --dir /proc/nope", 1, "cannot use --dir /proc/nope"),
]


@pytest.mark.parametrize(("command", "code", "message"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_gets_one_line_and_a_status(
    place: Path, command: str, code: int, message: str
) -> None:
    proc = run(place, *shlex.split(command))
    written = place / "n.toml"
    refused_init_wrote = written.exists()
    written.unlink(missing_ok=True)  # the next case starts without it
    assert not refused_init_wrote  # a refused init writes nothing
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().count("\n") == 0, proc.stderr  # one line
    assert message in proc.stderr
    assert proc.returncode == code, proc.stderr


@pytest.mark.parametrize(
    "argv",
    [
        ["node-agent", "scan", "--json", "fleet/spark01"],
        ["node-agent", "scan", "--by", "session", "fleet/spark01"],
        ["fleet-hub", "report", "--config", "good/hub.toml"],
        ["fleet-hub", "report", "--json", "--config", "good/hub.toml"],
        ["node-agent", "--version"],
    ],
)
def test_a_reader_that_went_away_gets_no_traceback(place: Path, argv: list[str]) -> None:
    """`… | head -3` where head has already exited: the write fails with EPIPE."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = run(place, *argv, stdout=write_end)
    finally:
        os.close(write_end)
    assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr
    assert proc.stderr.strip().count("\n") == 0, proc.stderr
    assert "broken pipe" in proc.stderr or argv[-1] == "--version"
    assert proc.returncode == 1


@pytest.mark.parametrize("script", ["node-agent", "fleet-hub"])
def test_version(place: Path, script: str) -> None:
    from importlib.metadata import version

    proc = run(place, script, "--version")
    assert proc.returncode == 0 and proc.stdout == f"{script} {version('fleetmeter')}\n"


def test_init_that_finds_no_agent_home_says_so(place: Path, tmp_path: Path) -> None:
    path = tmp_path / "node.toml"
    proc = run(place, "node-agent", "init", "--config", str(path), "--node", "n1")
    assert proc.returncode == 0, proc.stderr
    assert "no profile, so the node reads no logs" in proc.stderr
    assert "~/.claude" in proc.stderr and "--profile NAME:AGENT:HOME" in proc.stderr
    assert "check the profiles" not in proc.stdout


def test_serve_on_a_taken_port_says_so(place: Path, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config, _ = init_hub(
            tmp_path / "hub.toml",
            overrides={
                "data_dir": "data",
                "events": "tcp://127.0.0.1:0",
                "commands": f"tcp://127.0.0.1:{port}",
                "advertise": False,
            },
        )
        proc = run(place, "fleet-hub", "serve", "--config", str(config))
    assert "Traceback" not in proc.stderr and proc.returncode == 1, proc.stderr
    assert f"cannot listen on tcp://127.0.0.1:0 and tcp://127.0.0.1:{port}: " in proc.stderr
    assert "is another fleet-hub running?" in proc.stderr
    assert proc.stderr.strip().count("\n") == 0, proc.stderr


def test_a_path_that_cannot_be_listened_on_is_not_blamed_on_another_hub(place: Path) -> None:
    proc = run(place, "fleet-hub", "serve", "--config", "badipc/hub.toml")
    assert proc.returncode == 1 and "another fleet-hub" not in proc.stderr, proc.stderr
