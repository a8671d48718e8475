"""`fleet-hub` in a real terminal beside a running `fleet-hub serve`: it attaches (the config's
[api] and admin.token), says so, shows what the hub holds, says since when the hub is
unreachable after a kill -9 and reconnects once it is back; and `--hub` / `--token` errors
are one line with the right exit status."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.api_harness import call, fleet_hub, serve_hub, serve_over_https
from tests.fleet_harness import ROOT, child_env, free_port, start_hub, stop
from tests.test_tui_tmux import Tmux, tmux  # noqa: F401 (the fixture)


def start_dashboard(term: Tmux, tmp_path: Path, *args: str) -> None:
    """`fleet-hub ARGS` (the dashboard) in a tmux window of 160x40."""
    env = child_env(tmp_path)
    env.update(TERM="xterm-256color", LANG="C.UTF-8")
    command = f"unset COLUMNS LINES; cd {ROOT} && exec {sys.executable} -m hub.cli {' '.join(args)}"
    term(
        "new-session", "-d", "-s", "main", "-x", "160", "-y", "40",
        *(arg for key, value in env.items() for arg in ("-e", f"{key}={value}")),
        command,
    )  # fmt: skip


def test_the_dashboard_attached_in_a_real_terminal(tmux: Tmux, tmp_path: Path) -> None:  # noqa: F811
    served = serve_hub(tmp_path)
    try:
        served.send("spark01", [call("spark01", n) for n in range(3)])
        start_dashboard(tmux, tmp_path, "--config", str(served.setup.config))
        # the header's figures ("today … burn …") and the line under it
        tmux.wait_for(f"attached to {served.url}", "spark01", "online", "today", "burn", timeout=60)
        served.send("spark02", [call("spark02", n) for n in range(2)])
        tmux.wait_for("spark02", timeout=30)  # the stream's update, mirrored

        stop(served.proc, signal.SIGKILL)
        screen = tmux.wait_for("hub unreachable since", timeout=60)
        assert "spark02" in screen  # the last figures stay
        served.proc = start_hub(served.setup, served.tmp)
        tmux.wait_for(f"attached to {served.url}", timeout=60)
        tmux.wait_gone("hub unreachable since", timeout=30)
        tmux.keys("q")
        deadline = time.monotonic() + 30
        while tmux.alive() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not tmux.alive(), "the attached dashboard did not exit on q"
    finally:
        stop(served.proc)


def test_hub_and_token_mistakes_are_one_line(tmp_path: Path) -> None:
    nowhere = fleet_hub(tmp_path, "--hub", f"http://127.0.0.1:{free_port()}", "--token", "x")
    assert nowhere.returncode == 1 and nowhere.stderr.count("\n") == 1, nowhere.stderr
    assert "no hub answers at http://127.0.0.1:" in nowhere.stderr
    bad_url = fleet_hub(tmp_path, "--hub", "127.0.0.1:7463", "--token", "x")
    assert bad_url.returncode == 2 and "http://HOST:PORT" in bad_url.stderr, bad_url.stderr
    assert bad_url.stderr.count("\n") == 1
    served = serve_hub(tmp_path)
    try:
        wrong = fleet_hub(tmp_path, "--hub", served.url, "--token", "fmt_not-a-token")
        assert wrong.returncode == 2 and wrong.stderr.count("\n") == 1, wrong.stderr
        assert "token" in wrong.stderr
        elsewhere = tmp_path / "elsewhere.toml"  # no admin.token beside it, none in the env
        no_token = subprocess.run(
            [sys.executable, "-m", "hub.cli", "--hub", served.url, "--config", str(elsewhere)],
            capture_output=True,
            text=True,
            env={k: v for k, v in child_env(tmp_path).items() if k != "FLEETMETER_TOKEN"},
            timeout=60,
            check=False,
        )
        assert no_token.returncode == 2 and "--token" in no_token.stderr, no_token.stderr
    finally:
        stop(served.proc)


def test_hub_over_https_trusts_ssl_cert_file(tmp_path: Path) -> None:
    """`--hub https://…` of a hub with a self-signed certificate: refused as untrusted, then
    trusted with SSL_CERT_FILE (the token is then what the hub refuses)."""
    served, crt = serve_over_https(tmp_path)
    try:
        args = [sys.executable, "-m", "hub.cli", "--hub", served.url, "--token", "fmt_bad"]
        env = child_env(tmp_path)
        untrusted = subprocess.run(args, capture_output=True, text=True, env=env, timeout=60)
        assert untrusted.returncode == 1 and "certificate" in untrusted.stderr, untrusted.stderr
        env["SSL_CERT_FILE"] = str(crt)
        trusted = subprocess.run(args, capture_output=True, text=True, env=env, timeout=60)
        assert trusted.returncode == 2 and "token" in trusted.stderr, trusted.stderr
    finally:
        stop(served.proc)
