"""A real `fleet-hub serve` on loopback with tokens of every role and a little fleet in it,
for the API's tests and its bench."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import pynng
import pytest
import tomlkit

from hub.config import load_hub_config
from shared.codec import pack
from shared.events import Agent, Tokens, UsageEvent
from shared.hello import NodeHello, ProcessInfo, hello_to_map
from shared.wire import batch_body, seal
from tests.fleet_harness import HubSetup, child_env, free_port, make_hub, start_hub, stop

ROOT = Path(__file__).resolve().parent.parent
ROLES = ("viewer", "operator", "agent")


@dataclass
class ServedHub:
    setup: HubSetup
    proc: subprocess.Popen[bytes]
    url: str
    tokens: dict[str, str]
    tmp: Path
    seqs: dict[str, int] = field(default_factory=dict)

    def headers(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[role]}"}

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return fleet_hub(self.tmp, *args, "--config", str(self.setup.config), timeout=timeout)

    def send(self, node: str, events: list[UsageEvent], *, with_hello: bool = True) -> None:
        """One signed batch from `node`, acked after the hub committed it."""
        seq0 = self.seqs.get(node, 0) + 1
        seq1 = seq0 + len(events) - 1
        self.seqs[node] = max(seq1, seq0 - 1)
        hello = hello_to_map(node_hello(node)) if with_hello else None
        body = batch_body("s1", seq0, seq1, [pack(e) for e in events], hello)
        with pynng.Req0(recv_timeout=10_000, send_timeout=5000) as sock:
            sock.dial(self.setup.events, block=True)
            sock.send(seal(self.setup.key(node), node, "batch", body))
            sock.recv()


def fleet_hub(tmp: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hub.cli", *args],
        capture_output=True,
        text=True,
        env=child_env(tmp),
        cwd=ROOT,
        timeout=timeout,
        check=False,
    )


def node_hello(node: str) -> NodeHello:
    return NodeHello(
        node=node,
        version="0.1.0",
        boot_time=time.time() - 60,
        os="linux",
        cpu_count=2,
        processes=(
            ProcessInfo(
                pid=4242,
                create_time=time.time() - 30,
                agent=Agent.CLAUDE_CODE,
                state="running",
                session_id=f"sess-{node}",
            ),
        ),
    )


def call(node: str, n: int, *, model: str = "claude-sonnet-4-5") -> UsageEvent:
    return UsageEvent(
        event_id=f"claude:{node}:msg_{n}:req_{n}",
        ts=time.time(),
        agent=Agent.CLAUDE_CODE,
        model=model,
        tokens=Tokens(input=1000 + n, output=500, cache_read=2000),
        session_id=f"sess-{node}",
        machine=node,
        project="/src/app",
    )


def serve_hub(tmp: Path, api: dict[str, object] | None = None) -> ServedHub:
    setup = make_hub(tmp)
    if api is not None:
        doc = tomlkit.parse(setup.config.read_text())
        doc["api"] = api
        setup.config.write_text(tomlkit.dumps(doc))
    tokens: dict[str, str] = {}
    for role in ROLES:
        extra = ["--machine", "spark01"] if role == "agent" else []
        done = fleet_hub(
            tmp,
            "token",
            "create",
            f"t-{role}",
            "--role",
            role,
            *extra,
            "--config",
            str(setup.config),
        )
        assert done.returncode == 0, done.stderr
        tokens[role] = done.stdout.split()[-1]
    proc = start_hub(setup, tmp)
    config = load_hub_config(setup.config)
    scheme = "https" if config.api_tls_cert_key_file is not None else "http"
    return ServedHub(setup, proc, f"{scheme}://{config.api_listen}", tokens, tmp)


@contextmanager
def little_fleet(tmp: Path) -> Iterator[ServedHub]:
    """A served hub that holds three calls of spark01's, stopped on the way out."""
    served = serve_hub(tmp)
    try:
        served.send("spark01", [call("spark01", n) for n in range(3)])
        yield served
    finally:
        stop(served.proc)


def self_signed_certificate(tmp: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1: (its PEM with the key, for the hub; the
    certificate alone, for a client to trust). Needs the openssl command."""
    pem = tmp / "api.pem"
    key, crt = tmp / "api.key", tmp / "api.crt"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-keyout", key, "-out", crt, "-days", "2", "-subj", "/CN=hub",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    pem.write_text(crt.read_text() + key.read_text())
    return pem, crt


def serve_over_https(tmp: Path) -> tuple[ServedHub, Path]:
    """A served hub whose API speaks HTTPS with a self-signed certificate, and that
    certificate (for a client to trust). Skips the test without the openssl command."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is not installed: cannot make a test certificate")
    pem, crt = self_signed_certificate(tmp)
    tls = {"listen": f"127.0.0.1:{free_port()}", "tls_cert_key_file": str(pem)}
    return serve_hub(tmp, api=tls), crt


def report_rows(data: bytes | str) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = orjson.loads(data)["rows"]
    return rows
