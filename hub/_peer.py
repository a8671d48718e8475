"""Who sent a message: the peer's address, for logging a rejected frame under its sender."""

from __future__ import annotations

import pynng


def peer_of(message: pynng.Message) -> str:
    """The remote address of the pipe `message` came in on ("unknown peer" once it closed)."""
    try:
        return str(message.pipe.remote_address)
    except Exception:  # noqa: BLE001 (diagnostics only: a closed pipe has no address)
        return "unknown peer"
