"""The node config: [hub], state and timing keys, the node key file, and `node-agent init`."""

from __future__ import annotations

import os
import stat
import tomllib
from pathlib import Path

import msgspec
import psutil
import pytest

from node_agent.cli import main
from node_agent.daemon import Daemon
from node_agent.init import TEMPLATE, InitError, InitRequest, parse_profile_spec, run_init
from node_agent.simulate.fake_agent import launch
from shared.config import (
    Billing,
    ConfigError,
    NodeConfig,
    Profile,
    load_config,
    parse_config,
    read_node_key,
)
from shared.events import Agent

KEY_HEX = "00112233445566778899aabbccddeeff" * 2


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A user home of our own: no agent env overrides, no XDG dirs, no systemd."""
    user = tmp_path / "home"
    user.mkdir()
    monkeypatch.setenv("HOME", str(user))
    for var in (
        "XDG_CONFIG_HOME",
        "XDG_STATE_HOME",
        "XDG_DATA_HOME",
        "STATE_DIRECTORY",
        "FLEETMETER_CONFIG",
        "CLAUDE_CONFIG_DIR",
        "CODEX_HOME",
        "GEMINI_CLI_HOME",
        "OPENCODE_DATA_DIR",
    ):
        monkeypatch.delenv(var, raising=False)
    return user


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# -- reading ---------------------------------------------------------------------------------


def test_defaults_without_systemd(home: Path) -> None:
    config = load_config(write(home / "cfg" / "node.toml", 'node = "n1"\n'))
    assert config.discover_hub and config.hub_events is None and config.hub_commands is None
    assert config.key_file == home / "cfg" / "node.key"
    assert config.state_dir == home / ".local" / "state" / "fleetmeter"
    assert config.status_file == home / ".local" / "state" / "fleetmeter" / "profiles.json"
    assert (config.poll_interval, config.rescan_interval) == (0.5, 5.0)
    assert config.only_profile_processes
    assert NodeConfig().key_file == home / ".config" / "fleetmeter" / "node.key"


def test_state_dir_follows_systemd_then_xdg(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(home / "xdg-state"))
    assert parse_config({}).state_dir == home / "xdg-state" / "fleetmeter"
    monkeypatch.setenv("STATE_DIRECTORY", "/var/lib/fleet-node:/var/lib/other")
    config = parse_config({})
    assert config.state_dir == Path("/var/lib/fleet-node")
    # The heartbeat stays in the owner's state dir: the scheduler writes it as that user.
    assert config.status_file == home / "xdg-state" / "fleetmeter" / "profiles.json"


def test_full_hub_with_tls_and_relative_paths(home: Path) -> None:
    path = write(
        home / "cfg" / "node.toml",
        'node = "n1"\nstate_dir = "state"\nstatus_file = "~/rot/profiles.json"\n'
        "poll_interval = 1\nrescan_interval = 2.5\n"
        '[hub]\nevents = "tls+tcp://hub.lan:7461"\ncommands = "tls+tcp://hub.lan:7462"\n'
        'key_file = "keys/n1.key"\nca_file = "/etc/fleetmeter/ca.pem"\ncert_key_file = "n1.pem"\n'
        '[[profiles]]\nname = "a"\nagent = "codex"\nhome = "codex-a"\n',
    )
    config = load_config(path)
    assert (config.hub_events, config.hub_commands) == (
        "tls+tcp://hub.lan:7461",
        "tls+tcp://hub.lan:7462",
    )
    assert config.server_name == "hub.lan"  # Mbed TLS needs a name to verify against
    assert config.key_file == home / "cfg" / "keys" / "n1.key"
    assert config.ca_file == Path("/etc/fleetmeter/ca.pem")
    assert config.cert_key_file == home / "cfg" / "n1.pem"
    assert config.state_dir == home / "cfg" / "state"
    assert config.status_file == home / "rot" / "profiles.json"
    assert (config.poll_interval, config.rescan_interval) == (1.0, 2.5)
    assert config.profiles[0].home == home / "cfg" / "codex-a"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[hub]\nevents = "tcp://h:1"\n', "hub: set both 'events' and 'commands', or neither"),
        ('[hub]\nevents = "udp://h:1"\ncommands = "tcp://h:2"\n', "hub.events: unknown transport"),
        ('[hub]\nevents = "tcp://h:1"\ncommands = "tcp://h"\n', "hub.commands: 'tcp://h' needs"),
        ('[hub]\nevents = "hub.lan:1"\ncommands = "tcp://h:2"\n', "hub.events: 'hub.lan:1' is"),
        (
            '[hub]\nevents = "tls+tcp://h:1"\ncommands = "tls+tcp://h:2"\n',
            "hub.ca_file is required for tls+tcp://h:1",
        ),
        ('[hub]\nkey_file = ""\n', "hub.key_file must be a non-empty string"),
        ('[hub]\nevent = "tcp://h:1"\n', "hub: unknown key(s) event"),
        ('hub = "tcp://h:1"\n', "'hub' must be a table"),
        ("poll_interval = 0\n", "'poll_interval' must be a positive number of seconds"),
        ("poll_interval = true\n", "'poll_interval' must be a number of seconds"),
        ('rescan_interval = "5s"\n', "'rescan_interval' must be a number of seconds"),
        ("state_dir = 5\n", "'state_dir' must be a non-empty string"),
        ("poll_intervall = 1\n", "unknown key(s) poll_intervall"),
        ('only_profile_processes = "yes"\n', "'only_profile_processes' must be true or false"),
        ("only_profile_processes = 1\n", "'only_profile_processes' must be true or false"),
    ],
)
def test_errors_name_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path / "node.toml", text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}: ")
    assert message in str(info.value)


def test_only_profile_processes(tmp_path: Path) -> None:
    path = write(tmp_path / "node.toml", "only_profile_processes = false\n")
    assert not load_config(path).only_profile_processes
    # The template documents it, commented out: uncommented and turned off, it parses.
    assert "# only_profile_processes = true" in TEMPLATE
    text = TEMPLATE.replace("# only_profile_processes = true", "only_profile_processes = false")
    assert not parse_config(
        tomllib.loads(text.replace('node = ""', 'node = "n1"'))
    ).only_profile_processes


def test_a_default_node_lists_only_its_own_agents(home: Path, tmp_path: Path) -> None:
    """The default config reports no agent of a home it does not watch; a node without
    profiles watches the default homes, so an agent there is its own."""
    config = load_config(write(home / "cfg" / "node.toml", 'node = "n1"\n'))
    options = ("--pace", "60", "--children", "0", "--project", str(tmp_path))
    ours = launch(Agent.CLAUDE_CODE, home / ".claude", *options)
    stranger = launch(Agent.CLAUDE_CODE, tmp_path / "someone-else", *options)
    try:
        daemon = Daemon(config)
        listed = {p["pid"] for p in daemon.execute({"cmd": "processes"})["processes"]}
        assert ours.pid in listed and stranger.pid not in listed
        ctime = psutil.Process(stranger.pid).create_time()
        answer = daemon.execute({"cmd": "pause", "pid": stranger.pid, "ctime": ctime})
        assert answer["outcome"] == "refused"
        assert psutil.Process(stranger.pid).status() != psutil.STATUS_STOPPED
    finally:
        ours.destroy()
        stranger.destroy()


def test_only_profile_processes_in_the_daemon(tmp_path: Path) -> None:
    """Two nodes on one host: each reports, and halts, only the agents of its own profiles."""
    mine, other = tmp_path / "claude-mine", tmp_path / "claude-other"
    config = NodeConfig(
        node="n1",
        profiles=(Profile("mine", Agent.CLAUDE_CODE, mine),),
        state_dir=tmp_path / "state",
        status_file=None,
        only_profile_processes=True,
    )
    options = ("--pace", "60", "--children", "0", "--project", str(tmp_path))
    ours = launch(Agent.CLAUDE_CODE, mine, *options)
    theirs = launch(Agent.CLAUDE_CODE, other, *options)
    try:
        listed = Daemon(config).execute({"cmd": "processes"})["processes"]
        assert [(p["pid"], p["profile"]) for p in listed] == [(ours.pid, "mine")]
        everyone = msgspec.structs.replace(config, only_profile_processes=False)
        pids = {p["pid"] for p in Daemon(everyone).execute({"cmd": "processes"})["processes"]}
        assert {ours.pid, theirs.pid} <= pids

        ctime = psutil.Process(theirs.pid).create_time()
        answer = Daemon(config).execute({"cmd": "pause", "pid": theirs.pid, "ctime": ctime})
        assert answer["outcome"] == "refused" and "not an agent of this node" in answer["detail"]
        assert psutil.Process(theirs.pid).status() != psutil.STATUS_STOPPED
    finally:
        ours.destroy()
        theirs.destroy()


def test_ipc_addresses_are_accepted(tmp_path: Path) -> None:
    config = parse_config({"hub": {"events": "ipc:///run/e", "commands": "ipc:///run/c"}})
    assert config.hub_events == "ipc:///run/e" and not config.discover_hub


# -- the node key ----------------------------------------------------------------------------


def key_file(tmp_path: Path, text: str, mode: int) -> Path:
    path = tmp_path / "node.key"
    path.write_text(text)
    path.chmod(mode)
    return path


def test_read_node_key(tmp_path: Path) -> None:
    assert read_node_key(key_file(tmp_path, KEY_HEX + "\n", 0o600)) == bytes.fromhex(KEY_HEX)


def test_node_key_readable_by_others_is_refused(tmp_path: Path) -> None:
    path = key_file(tmp_path, KEY_HEX, 0o640)
    with pytest.raises(ConfigError) as info:
        read_node_key(path)
    assert f"{path}: the node key is readable by group or others (mode 0640)" in str(info.value)
    assert f"chmod 600 {path}" in str(info.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [("zz-secret-zz", "not a hex string"), ("abcd", "too short (2 bytes")],
)
def test_bad_node_key_never_echoes_it(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        read_node_key(key_file(tmp_path, text, 0o600))
    assert message in str(info.value) and text not in str(info.value)


def test_missing_node_key_says_how_to_get_one(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="fleet-hub enroll NODE"):
        read_node_key(tmp_path / "none.key")


# -- init ------------------------------------------------------------------------------------


def test_init_detects_default_homes(home: Path) -> None:
    (home / ".claude" / "projects").mkdir(parents=True)
    (home / ".codex").mkdir()
    path = home / "cfg" / "node.toml"
    result = run_init(InitRequest(path, node="spark01"))
    assert result.created
    config = load_config(path)
    assert config.node == "spark01" and config.discover_hub
    assert [(p.name, p.agent, p.home) for p in config.profiles] == [
        ("claude-code", Agent.CLAUDE_CODE, home / ".claude"),
        ("codex", Agent.CODEX, home / ".codex"),
    ]
    text = path.read_text()
    assert '# events = "tcp://HOST:7461"' not in text  # the hint is in prose, not a stale key
    assert "finds the hub on the local network (zeroconf)" in text
    assert 'key_file = "' + str(home / "cfg" / "node.key") + '"' in text
    assert "state_dir =" not in text.replace("# state_dir =", "")  # systemd's stays in charge


def test_init_rerun_keeps_operator_comments_and_edits(home: Path) -> None:
    path = home / "node.toml"
    srv = home / "srv"
    for name in ("a", "a2", "b"):
        (srv / name).mkdir(parents=True)
    run_init(
        InitRequest(path, node="n1", profiles=[parse_profile_spec(f"a:codex:{srv}/a:subscription")])
    )
    edited = path.read_text().replace(
        'node = "n1"', '# rack 4, left\nnode = "n1"  # asset tag 1234\npoll_interval = 2.0'
    )
    edited += "# operator: b is the backup login\n"
    path.write_text(edited.replace(f'home = "{srv}/a"', f'home = "{srv}/a"  # NFS'))

    result = run_init(
        InitRequest(
            path,
            hub_events="tcp://hub.lan:7461",
            profiles=[
                parse_profile_spec(f"a:codex:{srv}/a2::pro"),
                parse_profile_spec(f"b:claude-code:{srv}/b:api::ops@example.com"),
            ],
        )
    )
    assert not result.created
    text = path.read_text()
    for kept in ("# rack 4, left", "# asset tag 1234", "# operator: b is the backup login"):
        assert kept in text
    assert "# NFS" in text  # the inline comment stays on the updated key
    config = load_config(path)
    assert config.node == "n1" and config.poll_interval == 2.0
    assert (config.hub_events, config.hub_commands) == ("tcp://hub.lan:7461", "tcp://hub.lan:7462")
    a, b = config.profiles
    assert (a.home, a.billing, a.plan) == (srv / "a2", Billing.SUBSCRIPTION, "pro")
    assert (b.name, b.account) == ("b", "ops@example.com")
    # The addresses sit among the [hub] keys, not after its trailing comments.
    hub = text[text.index("[hub]") :]
    assert hub.index("events =") < hub.index("key_file =")


def test_init_rerun_with_nothing_new_does_not_touch_the_file(home: Path) -> None:
    path = home / "node.toml"
    run_init(InitRequest(path, node="n1"))
    before = path.stat().st_mtime_ns, path.read_text()
    result = run_init(InitRequest(path, node="n1"))
    assert result.changes == [] and (path.stat().st_mtime_ns, path.read_text()) == before


def test_init_force_rewrites(home: Path) -> None:
    path = home / "node.toml"
    run_init(InitRequest(path, node="n1"))
    path.write_text(path.read_text() + "# mine\n")
    run_init(InitRequest(path, node="n2", force=True))
    assert "# mine" not in path.read_text() and load_config(path).node == "n2"


def test_init_never_writes_a_config_it_cannot_read(home: Path) -> None:
    path = write(home / "node.toml", 'node = "n1"\npoll_interval = 0\n')
    with pytest.raises(ConfigError, match="poll_interval"):
        run_init(InitRequest(path, profiles=[parse_profile_spec("a:codex:/x")]))
    assert path.read_text() == 'node = "n1"\npoll_interval = 0\n'


def test_init_installs_the_key_owner_only(home: Path) -> None:
    path = home / "cfg" / "node.toml"
    result = run_init(InitRequest(path, node="n1", key_hex=KEY_HEX.upper()))
    assert result.key_file == home / "cfg" / "node.key"
    assert stat.S_IMODE(os.stat(result.key_file).st_mode) == 0o600
    assert read_node_key(load_config(path).key_file) == bytes.fromhex(KEY_HEX)


def test_init_refuses_a_bad_key_and_writes_nothing(home: Path) -> None:
    path = home / "cfg" / "node.toml"
    with pytest.raises(InitError, match="not a hex string"):
        run_init(InitRequest(path, key_hex="not-hex-secret"))
    assert not path.exists() and not (home / "cfg" / "node.key").exists()


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("a:codex", "expected NAME:AGENT:HOME"),
        ("a:vim:/x", "unknown agent 'vim'"),
        ("a:codex:/x:free", "billing 'free' is not"),
        (":codex:/x", "NAME and HOME must not be empty"),
    ],
)
def test_bad_profile_spec(spec: str, message: str) -> None:
    with pytest.raises(InitError, match=message):
        parse_profile_spec(spec)


def test_init_cli_with_key_from_stdin(
    home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO(KEY_HEX + "\n"))
    path = home / "n.toml"
    code = main(["init", "--config", str(path), "--hub", "tcp://10.0.0.5:9000", "--key-file", "-"])
    out = capsys.readouterr().out
    assert code == 0 and f"wrote {path}" in out and "(mode 600)" in out
    assert KEY_HEX not in out
    data = tomllib.loads(path.read_text())
    assert data["hub"]["commands"] == "tcp://10.0.0.5:9001"
    assert main(["init", "--config", str(path), "--profile", "x:vim:/x"]) == 2
    assert "unknown agent 'vim'" in capsys.readouterr().err


def test_init_over_an_empty_file_writes_the_whole_template(home: Path) -> None:
    path = write(home / "node.toml", "")
    with pytest.raises(ConfigError, match="the file is empty"):
        load_config(path)
    result = run_init(InitRequest(path, node="n1"))
    assert result.created and load_config(path).node == "n1"
    assert "# One [[profiles]] table per auth identity" in path.read_text()
