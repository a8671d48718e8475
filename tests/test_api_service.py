"""The hub as a service: `init --api`, the [api] table and its TLS rule, the systemd unit
`install-service` writes, readiness told to systemd over a real notify socket, and the API
over HTTPS."""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest
import tomlkit

from hub.config import check_plaintext, load_hub_config
from shared.config import ConfigError
from tests.api_harness import fleet_hub, serve_hub, serve_over_https
from tests.fleet_harness import child_env, make_hub, stop, wait_for

ROOT = Path(__file__).resolve().parent.parent
ANALYZE = shutil.which("systemd-analyze")


def set_api(config: Path, **api: object) -> None:
    doc = tomlkit.parse(config.read_text())
    doc["api"] = api
    config.write_text(tomlkit.dumps(doc))


def test_init_api_sets_the_listen_address(tmp_path: Path) -> None:
    config = tmp_path / "hub.toml"
    done = fleet_hub(tmp_path, "init", "--config", str(config), "--api", "127.0.0.1:17999")
    assert done.returncode == 0, done.stderr
    assert load_hub_config(config).api_listen == "127.0.0.1:17999"
    assert "[api]" in config.read_text()
    bad = fleet_hub(tmp_path, "init", "--config", str(tmp_path / "b.toml"), "--api", "nowhere")
    assert bad.returncode == 2
    assert bad.stderr.count("\n") == 1 and "HOST:PORT" in bad.stderr


def test_the_api_off_loopback_needs_tls_as_the_wire_does(tmp_path: Path) -> None:
    setup = make_hub(tmp_path)
    set_api(setup.config, listen="0.0.0.0:7463")
    with pytest.raises(ConfigError, match=r"\[api\] listen.*tls_cert_key_file"):
        check_plaintext(load_hub_config(setup.config))
    served = fleet_hub(tmp_path, "serve", "--config", str(setup.config))
    assert served.returncode == 2 and "without TLS" in served.stderr
    set_api(setup.config, listen="0.0.0.0:7463", tls_cert_key_file="api.pem")
    check_plaintext(load_hub_config(setup.config))  # with TLS: fine
    set_api(setup.config, listen="0.0.0.0:7463", colour="blue")
    with pytest.raises(ConfigError, match="colour"):
        load_hub_config(setup.config)


def test_install_service_writes_a_hardened_notify_unit(tmp_path: Path) -> None:
    setup = make_hub(tmp_path)
    system = fleet_hub(
        tmp_path, "install-service", "--config", str(setup.config), "--user", "ops", "--print"
    )
    assert system.returncode == 0, system.stderr
    unit = system.stdout
    for line in (
        "Type=notify",
        "WatchdogSec=30s",
        "Restart=on-failure",
        "User=ops",
        "ProtectSystem=strict",
        "WantedBy=multi-user.target",
    ):
        assert line in unit.splitlines(), line
    assert f"serve --config {setup.config}" in unit
    assert f"ReadWritePaths={setup.data_dir}" in unit
    user = fleet_hub(
        tmp_path, "install-service", "--config", str(setup.config), "--user-unit", "--print"
    )
    assert "User=" not in user.stdout and "WantedBy=default.target" in user.stdout
    out = tmp_path / "fleet-hub.service"
    written = fleet_hub(
        tmp_path, "install-service", "--config", str(setup.config), "--output", str(out)
    )
    assert written.returncode == 0 and out.read_text().startswith("# Written by")
    if ANALYZE is not None:
        verify = subprocess.run(
            [ANALYZE, "verify", "--man=no", str(out)], capture_output=True, text=True, check=False
        )
        assert "Unknown key" not in verify.stderr and "Invalid" not in verify.stderr, verify.stderr


@pytest.fixture
def notify(tmp_path: Path) -> Iterator[tuple[socket.socket, Path]]:
    path = tmp_path / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(30)
    yield sock, path
    sock.close()


def test_serve_tells_systemd_when_it_is_ready_and_when_it_stops(
    tmp_path: Path, notify: tuple[socket.socket, Path]
) -> None:
    sock, path = notify
    setup = make_hub(tmp_path)
    env = {**child_env(tmp_path), "NOTIFY_SOCKET": str(path)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "hub.cli", "serve", "--config", str(setup.config)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        ready = sock.recv(4096).decode()
        assert ready.startswith("READY=1") and "api http://127.0.0.1:" in ready
    finally:
        assert stop(proc, signal.SIGTERM) == 0
    assert sock.recv(4096) == b"STOPPING=1"


def test_a_serve_that_cannot_listen_exits_1_and_tells_systemd(
    tmp_path: Path, notify: tuple[socket.socket, Path]
) -> None:
    sock, path = notify
    setup = make_hub(tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        set_api(setup.config, listen=f"127.0.0.1:{taken.getsockname()[1]}")
        env = {**child_env(tmp_path), "NOTIFY_SOCKET": str(path)}
        done = subprocess.run(
            [sys.executable, "-m", "hub.cli", "serve", "--config", str(setup.config)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert done.returncode == 1
    assert "cannot listen" in done.stderr and "Traceback" not in done.stderr
    assert sock.recv(4096).startswith(b"STATUS=failed")


def test_the_api_over_https(tmp_path: Path) -> None:
    served, crt = serve_over_https(tmp_path)
    try:
        assert served.url.startswith("https://127.0.0.1:")
        plain = served.cli("nodes", "--json")
        assert plain.returncode == 0, plain.stderr
        assert orjson.loads(plain.stdout) == []
        answer = httpx.get(
            served.url + "/api/v1/summary",
            headers=served.headers("viewer"),
            verify=ssl.create_default_context(cafile=crt),
        )
        assert answer.status_code == 200
        wait_for(lambda: served.proc.poll() is None, 1, "the hub to keep serving")
    finally:
        stop(served.proc)


def test_without_a_hub_the_cli_reads_the_store_or_says_what_to_do(tmp_path: Path) -> None:
    setup = make_hub(tmp_path)
    config = ["--config", str(setup.config)]
    for command in (["nodes"], ["audit", "--json"]):
        done = fleet_hub(tmp_path, *command, *config)
        assert done.returncode == 1, command
        assert done.stderr.count("\n") == 1 and "fleet-hub serve" in done.stderr
    halt = fleet_hub(tmp_path, "kill", "spark01", "77", *config)
    assert halt.returncode == 1 and "no hub serves" in halt.stderr
    served = serve_hub(tmp_path / "again")
    stop(served.proc)
    nodes = served.cli("nodes", "--json")
    assert nodes.returncode == 0 and orjson.loads(nodes.stdout) == []
    assert served.cli("audit").returncode == 0


def test_token_commands_need_a_hub_config_and_a_good_name(tmp_path: Path) -> None:
    missing = fleet_hub(tmp_path, "token", "list", "--config", str(tmp_path / "none.toml"))
    assert missing.returncode == 2 and "fleet-hub init" in missing.stderr
    setup = make_hub(tmp_path)
    config = ["--config", str(setup.config)]
    bad = fleet_hub(tmp_path, "token", "create", "no spaces", "--role", "viewer", *config)
    assert bad.returncode == 2 and "token name" in bad.stderr
    unbound = fleet_hub(tmp_path, "token", "create", "a1", "--role", "agent", *config)
    assert unbound.returncode == 2 and "--machine" in unbound.stderr
    assert fleet_hub(tmp_path, "token", "create", "v", "--role", "viewer", *config).returncode == 0
    again = fleet_hub(tmp_path, "token", "create", "v", "--role", "viewer", *config)
    assert again.returncode == 2 and "revoke it first" in again.stderr
    gone = fleet_hub(tmp_path, "token", "revoke", "nobody", *config)
    assert gone.returncode == 1 and "no token named" in gone.stderr


def test_an_api_that_stops_by_itself_is_fatal_to_serve(
    notify: tuple[socket.socket, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    from fastapi import FastAPI

    from hub.api.run import supervise
    from hub.api.server import ApiServer

    sock, path = notify
    sock.settimeout(0.5)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    messages: list[bytes] = []
    listening = threading.Event()
    listening.set()

    def listen() -> None:  # drain the socket as systemd would, so no ping ever blocks
        while listening.is_set():
            with contextlib.suppress(TimeoutError):
                messages.append(sock.recv(4096))

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    api = ApiServer(FastAPI(), "127.0.0.1:0")
    api.start()
    stop_event = threading.Event()
    threading.Timer(0.5, lambda: setattr(api._server, "should_exit", True)).start()
    threading.Timer(5, stop_event.set).start()  # a SIGTERM, should the failure go unnoticed
    try:
        assert supervise(stop_event, api, ping=0.6) == 1  # not 0: systemd restarts it
    finally:
        api.stop()
        wait_for(lambda: bool(messages) and not messages[-1].startswith(b"WATCHDOG"), 2, "news")
        listening.clear()
        listener.join()
    assert b"WATCHDOG=1" in messages  # pinged while it served
    assert messages[-1].startswith(b"STATUS=failed: the API stopped")
