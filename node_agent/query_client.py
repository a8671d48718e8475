"""The client side of the node's query service: a few lines of HTTP over its unix socket,
with a short timeout (a hook runs synchronously inside the agent)."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlencode

TIMEOUT_S: Final = 2.0
SOCKET_NAME: Final = "query.sock"  # in the state dir
TOKEN_NAME: Final = "hook.token"  # in the state dir: the `http` hooks' token (mode 600)


class NodeUnavailable(Exception):
    """The node did not answer: no daemon, a stale socket, a timeout, or a bad answer."""


def socket_path(state_dir: Path) -> Path:
    return state_dir / SOCKET_NAME


def ask(
    state_dir: Path,
    method: str,
    target: str,
    body: bytes | None = None,
    timeout: float = TIMEOUT_S,
) -> dict[str, Any]:
    """One HTTP/1.0 exchange by hand (http.client alone costs a hook ~30 ms of imports)."""
    path = socket_path(state_dir)
    payload = body or b""
    request = (
        f"{method} {target} HTTP/1.0\r\nHost: localhost\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
    ).encode() + payload
    chunks: list[bytes] = []
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(path))
            sock.sendall(request)
            while chunk := sock.recv(65536):
                chunks.append(chunk)
    except FileNotFoundError:
        raise NodeUnavailable(f"no node daemon socket at {path}") from None
    except ConnectionRefusedError:
        raise NodeUnavailable(f"no node daemon listens on {path}") from None
    except PermissionError:
        raise NodeUnavailable(f"{path} belongs to another user") from None
    except OSError as exc:
        raise NodeUnavailable(f"the node at {path} did not answer: {exc}") from None
    head, _, data = b"".join(chunks).partition(b"\r\n\r\n")
    status = head.split(b" ", 2)[1] if head.count(b" ") >= 1 else b""
    try:
        answer = json.loads(data)
    except ValueError:
        raise NodeUnavailable("the node's answer is not JSON") from None
    if status != b"200" or not isinstance(answer, dict):
        raise NodeUnavailable(f"the node answered {status.decode(errors='replace')}: {answer}")
    return answer


def session_figures(
    state_dir: Path,
    session: str | None,
    pids: list[int] | None = None,
    cwd: str | None = None,
    timeout: float = TIMEOUT_S,
) -> dict[str, Any]:
    params: list[tuple[str, str]] = []
    if session:
        params.append(("session", session))
    params += [("pid", str(p)) for p in pids or []]
    if cwd:
        params.append(("cwd", cwd))
    return ask(state_dir, "GET", "/session?" + urlencode(params), timeout=timeout)


def hook_answer(
    state_dir: Path, event: str, body: bytes, timeout: float = TIMEOUT_S
) -> dict[str, Any]:
    return ask(state_dir, "POST", f"/hook/{event}", body, timeout=timeout)
