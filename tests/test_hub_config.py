"""The hub's config file (defaults, validation, comment-keeping writes) and its fleet secret."""

from __future__ import annotations

import dataclasses
import os
import socket
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from hub.config import (
    DEFAULT_COMMANDS,
    DEFAULT_EVENTS,
    check_plaintext,
    default_hub_config_path,
    enroll_key,
    init_hub,
    load_hub_config,
    read_secret,
    write_hub_config,
)
from shared.config import ConfigError
from shared.wire import create_key_file, derive_node_key, open_frame, seal


@pytest.fixture(autouse=True)
def xdg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv("FLEETMETER_HUB_CONFIG", raising=False)


@pytest.fixture
def umask_zero() -> Iterator[None]:
    """The most permissive umask: what we create must still be private."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_default_config_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert default_hub_config_path() == tmp_path / "config" / "fleetmeter" / "hub.toml"
    monkeypatch.setenv("FLEETMETER_HUB_CONFIG", "/srv/hub.toml")
    assert default_hub_config_path() == Path("/srv/hub.toml")


def test_defaults_when_the_file_is_missing(tmp_path: Path) -> None:
    path = tmp_path / "etc" / "hub.toml"
    config = load_hub_config(path, missing_ok=True)
    assert config.name == socket.gethostname()
    assert (config.events, config.commands) == (DEFAULT_EVENTS, DEFAULT_COMMANDS)
    assert config.data_dir == tmp_path / "data" / "fleetmeter"
    assert config.secret_file == tmp_path / "etc" / "fleet.secret"
    assert config.advertise and config.stale_after == 15.0 and config.tls_cert_key_file is None
    assert config.retain_days == 90
    with pytest.raises(ConfigError, match="hub.toml: no such file .run `fleet-hub init`"):
        load_hub_config(path)


def test_a_full_config(tmp_path: Path) -> None:
    path = write(
        tmp_path / "hub.toml",
        'name = "ops"\nevents = "tls+tcp://0.0.0.0:9000"\ncommands = "tls+tcp://0.0.0.0:9001"\n'
        'data_dir = "db"\nsecret_file = "~/s/fleet.secret"\nadvertise = false\n'
        'tls_cert_key_file = "pki/hub.pem"\ntls_ca_file = "/etc/ca.pem"\nstale_after = 7.5\n'
        "retain_days = 30\n",
    )
    config = load_hub_config(path)
    assert config.name == "ops" and not config.advertise and config.stale_after == 7.5
    assert config.retain_days == 30
    assert config.data_dir == tmp_path / "db"  # relative to the file
    assert config.secret_file == Path.home() / "s" / "fleet.secret"
    assert config.tls_cert_key_file == tmp_path / "pki" / "hub.pem"
    assert config.tls_ca_file == Path("/etc/ca.pem")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("nmae = 'x'\n", "unknown key.s. nmae"),
        ("name = ''\n", "'name' must be a non-empty string"),
        ("name = '" + "x" * 64 + "'\n", "'name' must be at most 63 bytes"),
        ("events = 7461\n", "'events' must be a non-empty string"),
        ("events = 'http://x:1'\n", "'events' = 'http://x:1' is not an nng address"),
        ("commands = 'tcp://0.0.0.0'\n", "'commands' = 'tcp://0.0.0.0' needs a host and a port"),
        ("commands = 'tcp://h:99999'\n", "needs a host and a port"),
        ("commands = 'tcp://0.0.0.0:7461'\n", "must be different addresses"),
        ("advertise = 'yes'\n", "'advertise' must be true or false"),
        ("stale_after = 0\n", "'stale_after' must be a positive number"),
        ("stale_after = true\n", "'stale_after' must be a positive number"),
        ("stale_after = nan\n", "'stale_after' must be a positive number"),
        ("retain_days = 0\n", "'retain_days' must be a whole number of days, at least 1"),
        ("retain_days = 1.5\n", "'retain_days' must be a whole number of days"),
        ("retain_days = true\n", "'retain_days' must be a whole number of days"),
        ("events = 'tls+tcp://0.0.0.0:1'\n", "events use tls.tcp:// but tls_cert_key_file"),
        ("tls_cert_key_file = 'hub.pem'\n", "no address uses tls.tcp://"),
        ("advertise = false\nevents = 'ipc:///run/h'\ntls_ca_file = 'c'\n", "needs tls_cert_key"),
        ("events = 'ipc:///run/hub.sock'\n", "advertise = true needs tcp://"),
        ("name = 'x\n", "not valid TOML"),
    ],
)
def test_bad_configs_name_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path / "hub.toml", text)
    with pytest.raises(ConfigError, match=message) as info:
        load_hub_config(path)
    assert str(path) in str(info.value)


def test_local_addresses_are_fine_without_advertising(tmp_path: Path) -> None:
    path = write(
        tmp_path / "hub.toml",
        'advertise = false\nevents = "ipc:///run/ev"\ncommands = "inproc://cmd"\n',
    )
    assert load_hub_config(path).commands == "inproc://cmd"


def test_both_endpoints_may_ask_for_any_free_port(tmp_path: Path) -> None:
    path = write(
        tmp_path / "hub.toml",
        'advertise = false\nevents = "tcp://127.0.0.1:0"\ncommands = "tcp://127.0.0.1:0"\n',
    )
    config = load_hub_config(path)
    assert config.events == config.commands == "tcp://127.0.0.1:0"


@pytest.mark.parametrize(
    ("events", "commands", "exposed"),
    [
        ("tcp://127.0.0.1:1", "tcp://[::1]:2", None),
        ("tcp://localhost:1", "ipc:///run/cmd", None),
        ("tls+tcp://0.0.0.0:1", "tls+tcp://hub.lan:2", None),
        ("tcp://0.0.0.0:1", "tcp://127.0.0.1:2", "events = 'tcp://0.0.0.0:1'"),
        ("tcp://127.0.0.1:1", "tcp://hub.lan:2", "commands = 'tcp://hub.lan:2'"),
        ("tcp://:1", "tcp://[::]:2", "events = 'tcp://:1' and commands = 'tcp://[::]:2'"),
    ],
)
def test_plain_tcp_off_loopback_needs_allow_plaintext(
    tmp_path: Path, events: str, commands: str, exposed: str | None
) -> None:
    tls = "tls_cert_key_file = 'hub.pem'\n" if "tls" in events else ""
    text = f"advertise = false\nevents = {events!r}\ncommands = {commands!r}\n{tls}"
    config = load_hub_config(write(tmp_path / "hub.toml", text))
    assert not config.allow_plaintext
    if exposed is None:
        check_plaintext(config)
        return
    with pytest.raises(ConfigError) as info:
        check_plaintext(config)
    message = str(info.value)
    assert message.startswith(f"{tmp_path / 'hub.toml'}: {exposed} would listen on the network")
    assert "reads every command" in message and "allow_plaintext = true" in message
    allowed = write(tmp_path / "allowed.toml", text + "allow_plaintext = true\n")
    check_plaintext(load_hub_config(allowed))


# --- writing ------------------------------------------------------------------------------


def test_template_reads_back_as_the_defaults_and_explains_every_key(tmp_path: Path) -> None:
    path = tmp_path / "hub.toml"
    written = write_hub_config(path)
    defaults = load_hub_config(tmp_path / "none", missing_ok=True)
    assert written == load_hub_config(path) == dataclasses.replace(defaults, path=path)
    text = path.read_text()
    for key in ("name", "data_dir", "secret_file", "tls_cert_key_file", "tls_ca_file"):
        assert f"\n# {key} = " in text  # optional keys are shown commented out
    assert text.count("\n#") > 15


def test_overrides_go_into_the_template(tmp_path: Path) -> None:
    path = tmp_path / "hub.toml"
    write_hub_config(
        path, {"name": "ops", "data_dir": tmp_path / "db", "stale_after": 30, "advertise": False}
    )
    config = load_hub_config(path)
    assert (config.name, config.data_dir, config.stale_after) == ("ops", tmp_path / "db", 30.0)
    assert not config.advertise
    assert "\n# name = " not in path.read_text()


def test_updates_keep_the_operators_comments(tmp_path: Path) -> None:
    path = tmp_path / "hub.toml"
    write_hub_config(path)
    path.write_text(path.read_text() + "# ask Dana before changing the ports\n")
    write_hub_config(path, {"events": "tcp://0.0.0.0:9000", "name": "ops"})
    text = path.read_text()
    assert "# ask Dana before changing the ports" in text
    assert "# Announce this hub over zeroconf" in text
    assert load_hub_config(path).events == "tcp://0.0.0.0:9000"
    assert load_hub_config(path).name == "ops"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [({"port": 1}, "unknown key.s. port"), ({"stale_after": -1}, "'stale_after' must be")],
)
def test_bad_overrides_change_nothing(
    tmp_path: Path, overrides: dict[str, object], message: str
) -> None:
    path = tmp_path / "hub.toml"
    write_hub_config(path)
    before = path.read_text()
    with pytest.raises(ConfigError, match=message):
        write_hub_config(path, overrides)
    assert path.read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["hub.toml"]  # no temporary file left


# --- init and the fleet secret ------------------------------------------------------------


def test_init_creates_a_private_secret(tmp_path: Path, umask_zero: None) -> None:
    config_path, secret_path = init_hub(tmp_path / "etc" / "hub.toml")
    assert secret_path == tmp_path / "etc" / "fleet.secret"
    assert stat.S_IMODE(secret_path.stat().st_mode) == 0o600
    text = secret_path.read_text()
    assert len(text.strip()) == 64 and bytes.fromhex(text)
    assert read_secret(secret_path) == bytes.fromhex(text)
    assert load_hub_config(config_path).secret_file == secret_path
    assert sorted(p.name for p in secret_path.parent.iterdir()) == ["fleet.secret", "hub.toml"]


def test_init_never_replaces_a_secret(tmp_path: Path) -> None:
    path = tmp_path / "hub.toml"
    _, secret_path = init_hub(path)
    secret = secret_path.read_bytes()
    with pytest.raises(ConfigError, match="hub.toml: already exists .use --force"):
        init_hub(path)
    path.unlink()
    with pytest.raises(ConfigError, match="fleet secret already exists; refusing to replace"):
        init_hub(path)
    assert not path.exists()
    init_hub(path, force=True, overrides={"name": "ops"})  # rewrites the config only
    assert secret_path.read_bytes() == secret
    assert load_hub_config(path).name == "ops"


def test_init_refuses_to_keep_a_bad_secret(tmp_path: Path) -> None:
    secret = write(tmp_path / "fleet.secret", "00" * 32)
    secret.chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        init_hub(tmp_path / "hub.toml", force=True)


@pytest.mark.parametrize(
    ("content", "mode", "message"),
    [
        (None, 0o600, "fleet secret file does not exist"),
        ("zz" * 32, 0o600, "fleet secret is not hex"),
        ("00" * 16, 0o600, "must be 32 bytes, got 16"),
        ("00" * 32, 0o640, r"accessible by group or others \(mode 0640\); run: chmod 600"),
        ("00" * 32, 0o604, "chmod 600"),
        ("\u00e9" * 32, 0o600, "fleet secret is not hex"),
    ],
)
def test_read_secret_refuses_bad_files(
    tmp_path: Path, content: str | None, mode: int, message: str
) -> None:
    path = tmp_path / "fleet.secret"
    if content is not None:
        write(path, content).chmod(mode)
    with pytest.raises(ConfigError, match=message) as info:
        read_secret(path)
    assert str(path) in str(info.value)
    assert "zz" not in str(info.value)  # a secret's content is never echoed


def test_read_secret_refuses_a_fifo(tmp_path: Path) -> None:
    fifo = tmp_path / "fleet.secret"
    os.mkfifo(fifo, 0o600)
    with pytest.raises(ConfigError, match="fleet secret must be a regular file"):
        read_secret(fifo)


def test_an_enrolled_node_key_is_accepted_by_the_hub(tmp_path: Path) -> None:
    config_path, secret_path = init_hub(tmp_path / "hub.toml")
    config = load_hub_config(config_path)
    node_key = bytes.fromhex(enroll_key(config, "spark01"))
    secret = read_secret(secret_path)

    def hub_key_for(node: str) -> bytes:
        return derive_node_key(secret, node)

    frame = open_frame(seal(node_key, "spark01", "batch", {}), hub_key_for)
    assert frame.node == "spark01"
    with pytest.raises(ValueError, match="bad_mac|fails authentication"):
        open_frame(seal(node_key, "spark02", "batch", {}), hub_key_for)  # cannot pose as another
    with pytest.raises(ConfigError, match="cannot enroll: '' is not a node name"):
        enroll_key(config, "")


def test_create_key_file_never_overwrites(tmp_path: Path) -> None:
    path = write(tmp_path / "node.key", "existing\n")
    with pytest.raises(ConfigError, match="node.key: already exists; refusing to overwrite"):
        create_key_file(path, bytes(32))
    assert path.read_text() == "existing\n"
    assert [p.name for p in tmp_path.iterdir()] == ["node.key"]
    blocker = write(tmp_path / "file", "")
    with pytest.raises(ConfigError, match="file: cannot create directory"):
        create_key_file(blocker / "node.key", bytes(32))
