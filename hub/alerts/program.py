"""A program sink: the command runs with the webhook body on stdin and the Standard Webhooks
headers in its environment (WEBHOOK_ID, WEBHOOK_TIMESTAMP, WEBHOOK_SIGNATURE); exit 0 means
delivered. Past its timeout its whole process group is killed and the delivery retried."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Mapping, Sequence

TAIL = 200  # characters of the program's stderr kept as the delivery's result


def run_program(
    command: Sequence[str], body: bytes, headers: Mapping[str, str], timeout: float
) -> tuple[bool, str]:
    """(delivered, what happened)."""
    env = dict(os.environ)
    env.update(
        {k.upper().replace("-", "_"): v for k, v in headers.items() if k.startswith("webhook-")}
    )
    try:
        proc = subprocess.Popen(
            list(command),
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env,
            start_new_session=True,  # its own group: a timeout kills what it started too
        )
    except OSError as exc:
        return False, f"cannot run {command[0]}: {exc.strerror or exc}"
    try:
        _, err = proc.communicate(body, timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return False, f"{command[0]} did not finish within {timeout:g} s (killed)"
    if proc.returncode == 0:
        return True, "exit 0"
    tail = err.decode(errors="replace").strip()[-TAIL:]
    return False, f"exit {proc.returncode}" + (f": {tail}" if tail else "")
