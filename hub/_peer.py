"""Who sent a message: the peer's address, for logging a rejected frame under its sender."""

from __future__ import annotations

import pynng


def peer_of(message: pynng.Message) -> str:
    """The remote host of the pipe `message` came in on ("unknown peer" once it closed).

    The host, not host:port: every new connection has a new port, so a peer that redials for
    each bad frame would otherwise be a new origin each time, a log line each, and would use
    up the origins the reject log names (hiding, say, a real node's wrong key)."""
    try:
        address = message.pipe.remote_address
    except Exception:  # noqa: BLE001 (diagnostics only: a closed pipe has no address)
        return "unknown peer"
    if isinstance(address, pynng.sockaddr.InAddr | pynng.sockaddr.In6Addr):
        return str(address).rpartition(":")[0]
    return str(address)
