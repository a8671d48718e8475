"""Signed, versioned, size-capped frames: the only bytes node and hub exchange.

    frame = msgpack [version, node, mac, inner]
    inner = msgpack {"k": kind, "ts": epoch seconds, "id": message id, "b": body}
    mac   = HMAC-SHA256(node key, version byte + node + NUL + inner)

Each node has its own key, derived from the fleet secret, so the hub can check every node while
a node can sign only as itself. Frames from the hub to a node carry the target's name and are
signed with the target's key: a node ignores a broadcast survey meant for another (`peek_node`).

A receiver must pass `kinds=` for its direction (`TO_HUB` or `TO_NODE`): the kind is inside the
MAC, so this stops a frame signed for one direction being reflected into the other.

Replays: `ReplayGuard` remembers message ids for a window longer than the clock skew accepted by
`open_frame`, so an old frame is either stale or remembered. The hub drops a replayed batch
unanswered (a replay must not count as a sign of life); Req0 re-sends the same bytes by itself
when a pipe drops, and a node whose ack was lost that way times out and seals the rows again as
a new frame, which the store dedupes by event id. A replayed *command* must not run twice.
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
import logging
import math
import os
import secrets
import stat
import time
from collections import Counter
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

import msgpack

from shared.config import ConfigError

PROTOCOL_VERSION: Final = 1
MAX_FRAME: Final = 1 << 20  # default cap; set the same value as recv_max_size on both ends
KEY_BYTES: Final = 32
MAC_BYTES: Final = 32
MAX_NODE_NAME: Final = 255  # bytes of UTF-8
MAX_ID: Final = 64
MAX_OUTCOMES: Final = 200  # session outcomes per batch

BATCH: Final = "batch"  # node -> hub: events
ACK: Final = "ack"  # hub -> node: the events are committed
CMD: Final = "cmd"  # hub -> node: pause / resume / kill
REPLY: Final = "reply"  # node -> hub: the answer to a command
KINDS: Final = frozenset({BATCH, ACK, CMD, REPLY})
TO_HUB: Final = frozenset({BATCH, REPLY})
TO_NODE: Final = frozenset({ACK, CMD})

Reason = Literal[
    "oversize", "malformed", "version", "unknown_node", "bad_mac", "stale", "kind", "replay"
]

_KEY_LABEL: Final = b"fleetmeter/node-key/v1\0"

log = logging.getLogger(__name__)


class FrameError(ValueError):
    """A frame that must be dropped; `reason` is the counter it goes to, the message the detail,
    `node` the node name it claimed when it got that far (unverified: a hint, not an identity)."""

    def __init__(self, reason: Reason, message: str, *, node: str | None = None) -> None:
        super().__init__(message)
        self.reason: Reason = reason
        self.node = node


@dataclass(frozen=True, slots=True)
class Frame:
    node: str
    kind: str
    ts: float
    id: str
    body: Any


# --- keys ---------------------------------------------------------------------------------


def derive_node_key(secret: bytes, node: str) -> bytes:
    """The node's own key; only the hub (holding the fleet secret) can derive another's."""
    if len(secret) < KEY_BYTES:
        raise ValueError(f"fleet secret must be at least {KEY_BYTES} bytes, got {len(secret)}")
    _check_node_name(node)
    return hmac.new(secret, _KEY_LABEL + node.encode(), hashlib.sha256).digest()


def read_key_file(path: Path, *, what: str = "node key") -> bytes:
    """Read a hex key file, refusing one that group or others could read."""
    try:
        mode = path.stat().st_mode
        if not stat.S_ISREG(mode):  # a FIFO would block the read forever
            raise ConfigError(f"{path}: {what} must be a regular file")
        if mode & 0o077:
            raise ConfigError(
                f"{path}: {what} is accessible by group or others "
                f"(mode {stat.S_IMODE(mode):04o}); run: chmod 600 {path}"
            )
        text = path.read_text(encoding="ascii")
        key = bytes.fromhex(text.strip())
    except FileNotFoundError:
        raise ConfigError(f"{path}: {what} file does not exist") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read {what}: {exc.strerror or exc}") from exc
    except ValueError as exc:  # UnicodeDecodeError or fromhex; never echo a secret's content
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"{path}: {what} is not hex text") from None
    if len(key) != KEY_BYTES:
        raise ConfigError(f"{path}: {what} must be {KEY_BYTES} bytes, got {len(key)}")
    return key


def create_key_file(path: Path, key: bytes) -> None:
    """Write `key` as hex to a new file that is mode 0600 from its first instant.

    The file appears complete or not at all (written under a temporary name, then hard-linked,
    which fails rather than replace an existing key).
    """
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise ConfigError(f"{path.parent}: cannot create directory: {exc.strerror or exc}") from exc
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as fh:
            os.fchmod(fh.fileno(), 0o600)  # the umask may only have narrowed it; be exact
            fh.write(key.hex() + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.link(tmp, path)
    except FileExistsError:
        raise ConfigError(f"{path}: already exists; refusing to overwrite a key") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot create key file: {exc.strerror or exc}") from exc
    finally:
        tmp.unlink(missing_ok=True)


# --- frames -------------------------------------------------------------------------------


def seal(
    key: bytes,
    node: str,
    kind: str,
    body: Any,
    *,
    ts: float | None = None,
    msg_id: str | None = None,
    max_size: int = MAX_FRAME,
) -> bytes:
    """One signed frame. Raises FrameError("oversize") rather than emit a frame the peer drops."""
    if kind not in KINDS:
        raise ValueError(f"unknown frame kind {kind!r} (one of {', '.join(sorted(KINDS))})")
    if len(key) < 16:
        raise ValueError(f"frame key too short ({len(key)} bytes)")
    _check_node_name(node)
    msg_id = msg_id if msg_id is not None else secrets.token_hex(8)
    if not 0 < len(msg_id) <= MAX_ID:
        raise ValueError(f"message id must be 1..{MAX_ID} characters")
    inner_map = {"k": kind, "ts": time.time() if ts is None else float(ts), "id": msg_id, "b": body}
    try:
        inner: bytes = msgpack.packb(inner_map, use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as exc:
        raise ValueError(f"{kind} body cannot be packed: {exc}") from exc
    data: bytes = msgpack.packb(
        [PROTOCOL_VERSION, node, _mac(key, PROTOCOL_VERSION, node, inner), inner],
        use_bin_type=True,
    )
    if len(data) > max_size:
        raise FrameError("oversize", f"{kind} frame is {len(data)} bytes, cap is {max_size}")
    return data


def open_frame(
    data: bytes,
    key_for: Callable[[str], bytes | None],
    *,
    max_size: int = MAX_FRAME,
    now: float | None = None,
    max_skew: float = 300.0,
    kinds: Collection[str] = KINDS,
) -> Frame:
    """Check and decode a frame; every problem raises FrameError, nothing else."""
    if len(data) > max_size:
        raise FrameError("oversize", f"frame is {len(data)} bytes, cap is {max_size}")
    outer = _unpack(data, "frame")
    if not isinstance(outer, list) or not outer or not _is_int(outer[0]):
        raise FrameError("malformed", "frame is not an array starting with a version number")
    if outer[0] != PROTOCOL_VERSION:
        raise FrameError(
            "version", f"protocol version {outer[0]} not supported (expected {PROTOCOL_VERSION})"
        )
    if len(outer) != 4:
        raise FrameError("malformed", f"frame has {len(outer)} fields, expected 4")
    _, node, mac, inner = outer
    if not isinstance(node, str) or not _valid_node_name(node):
        raise FrameError("malformed", "frame node name is not a valid name")
    if not isinstance(mac, bytes) or len(mac) != MAC_BYTES:
        raise FrameError("malformed", f"frame mac is not {MAC_BYTES} bytes")
    if not isinstance(inner, bytes):
        raise FrameError("malformed", "frame payload is not bytes")
    key = key_for(node)
    if key is None:
        raise FrameError("unknown_node", f"no key for node {node!r}")
    if not hmac.compare_digest(mac, _mac(key, PROTOCOL_VERSION, node, inner)):
        raise FrameError("bad_mac", f"frame from {node!r} fails authentication", node=node)
    frame = _decode_inner(node, inner)
    if frame.kind not in kinds:
        raise FrameError("kind", f"frame kind {frame.kind!r} not accepted here")
    now = time.time() if now is None else now
    if abs(frame.ts - now) > max_skew:
        raise FrameError(
            "stale", f"frame from {node!r} is {frame.ts - now:+.0f}s off (limit ±{max_skew:g}s)"
        )
    return frame


def peek_node(data: bytes) -> str | None:
    """The node name a frame claims, unchecked: only to skip frames meant for another node."""
    if len(data) > MAX_FRAME:
        return None
    try:
        outer = msgpack.unpackb(data, raw=False, strict_map_key=True)
    except (ValueError, msgpack.UnpackException):
        return None
    if isinstance(outer, list) and len(outer) >= 2 and isinstance(outer[1], str):
        return outer[1]
    return None


def _mac(key: bytes, version: int, node: str, inner: bytes) -> bytes:
    h = hmac.new(key, bytes([version]) + node.encode() + b"\0", hashlib.sha256)
    h.update(inner)
    return h.digest()


def _unpack(data: bytes, what: str) -> Any:
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=True)
    except (ValueError, msgpack.UnpackException) as exc:
        raise FrameError("malformed", f"{what} is not valid msgpack: {exc}") from None


def _decode_inner(node: str, inner: bytes) -> Frame:
    payload = _unpack(inner, "frame payload")
    if not isinstance(payload, dict):
        raise FrameError("malformed", "frame payload is not a map")
    if missing := sorted({"k", "ts", "id", "b"} - payload.keys()):
        raise FrameError("malformed", f"frame payload lacks {', '.join(missing)}")
    kind, ts, msg_id = payload["k"], payload["ts"], payload["id"]
    if not isinstance(kind, str):
        raise FrameError("malformed", "frame kind is not a string")
    if kind not in KINDS:
        raise FrameError("kind", f"unknown frame kind {kind!r}")
    if not isinstance(ts, int | float) or isinstance(ts, bool) or not math.isfinite(ts):
        raise FrameError("malformed", "frame timestamp is not a finite number")
    if not isinstance(msg_id, str) or not 0 < len(msg_id) <= MAX_ID:
        raise FrameError("malformed", f"frame id is not a string of 1..{MAX_ID} characters")
    return Frame(node=node, kind=kind, ts=float(ts), id=msg_id, body=payload["b"])


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _valid_node_name(node: str) -> bool:
    # NUL is the separator inside the MAC input, so it must not occur in a name.
    try:
        size = len(node.encode())
    except UnicodeEncodeError:  # lone surrogates
        return False
    return 0 < size <= MAX_NODE_NAME and "\0" not in node


def _check_node_name(node: str) -> None:
    if not isinstance(node, str) or not _valid_node_name(node):
        raise ValueError(f"invalid node name {node!r}: 1..{MAX_NODE_NAME} bytes, no NUL")


# --- replay and reject bookkeeping --------------------------------------------------------


class ReplayGuard:
    """Remembers (node, message id) for `window` seconds of frame time, in bounded memory.

    Anything older than what it may have forgotten (the window, or entries evicted when full)
    is refused: it cannot prove such a frame is new.
    """

    def __init__(self, window: float = 600.0, max_entries: int = 100_000) -> None:
        if window <= 0 or max_entries <= 0:
            raise ValueError("ReplayGuard window and max_entries must be positive")
        self.window = window
        self.max_entries = max_entries
        self._seen: set[tuple[str, str]] = set()
        self._order: list[tuple[float, str, str]] = []  # heap by frame timestamp
        self._floor = -math.inf  # frames at or below this ts may have been forgotten

    def __len__(self) -> int:
        return len(self._seen)

    def check_and_remember(
        self, node: str, msg_id: str, ts: float, *, now: float | None = None
    ) -> bool:
        """True for a new message (now remembered), False for a replay or a too-old one."""
        cutoff = (time.time() if now is None else now) - self.window
        while self._order and self._order[0][0] < cutoff:
            old_ts, old_node, old_id = heapq.heappop(self._order)
            self._seen.discard((old_node, old_id))
        if ts < cutoff or ts <= self._floor or (node, msg_id) in self._seen:
            return False
        if len(self._order) >= self.max_entries:
            old_ts, old_node, old_id = heapq.heappop(self._order)
            self._seen.discard((old_node, old_id))
            self._floor = max(self._floor, old_ts)
            if ts <= self._floor:
                return False
        heapq.heappush(self._order, (ts, node, msg_id))
        self._seen.add((node, msg_id))
        return True


class RejectLog:
    """Counts dropped frames per reason and logs each (origin, reason) once, so a flood of bad
    frames costs a counter increment, not a log line each. `name` says which channel."""

    def __init__(
        self,
        name: str = "frames",
        *,
        logger: logging.Logger | None = None,
        max_origins: int = 10_000,
    ) -> None:
        self.name = name
        self.counts: Counter[str] = Counter()
        self._logger = logger or log
        self._logged: set[tuple[str, str]] = set()
        self._max_origins = max_origins
        self._overflowed = False

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def record(self, error: FrameError, origin: str) -> None:
        self.reject(error.reason, origin, str(error))

    def reject(self, reason: str, origin: str, detail: str = "") -> None:
        """Count one dropped frame; `origin` is the peer address or the claimed node name."""
        self.counts[reason] += 1
        key = (origin, reason)
        if key in self._logged:
            return
        if len(self._logged) >= self._max_origins:
            if not self._overflowed:  # log the overflow itself once
                self._overflowed = True
                self._logger.warning(
                    "%s: dropped frames from over %d origins; no longer logging new ones",
                    self.name,
                    self._max_origins,
                )
            return
        self._logged.add(key)
        self._logger.warning(
            "%s: dropped frame from %r: %s (%s); further %s frames from there are only counted",
            self.name,
            origin,
            reason,
            detail or "no detail",
            reason,
        )


# --- batch bodies -------------------------------------------------------------------------


def batch_body(
    stream: str,
    seq0: int,
    seq1: int,
    events: list[bytes],
    hello: dict[str, Any] | None = None,
    outcomes: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The body of a "batch" frame: outbox rows seq0..seq1 of `stream`, each as `codec.pack`
    bytes (the outbox stores them packed; the hub unpacks and checks each one on its own, so
    one bad event never costs the batch).

    An empty `events` list is a heartbeat (seq0 = seq1 + 1 then). `hello` carries the node's
    self-description when it (re)connects. `outcomes`: what some of the node's sessions
    produced (`shared.outcomes` maps), an additive field older hubs ignore.
    """
    body: dict[str, Any] = {"stream": stream, "seq0": seq0, "seq1": seq1, "events": events}
    if hello is not None:
        body["hello"] = hello
    if outcomes:
        body["outcomes"] = outcomes
    try:
        return parse_batch_body(body)
    except FrameError as exc:
        raise ValueError(str(exc)) from None


def parse_batch_body(body: Any) -> dict[str, Any]:
    """Check a received batch body's shape (events themselves are checked by `codec.from_map`)."""
    if not isinstance(body, dict):
        raise FrameError("malformed", "batch body is not a map")
    stream, seq0, seq1 = body.get("stream"), body.get("seq0"), body.get("seq1")
    if not isinstance(stream, str) or not stream:
        raise FrameError("malformed", "batch stream is not a non-empty string")
    # Below 2^63: the hub's store keeps sequence numbers as SQLite integers (2^64-1 raised
    # OverflowError there, which ended the receiver thread).
    if type(seq0) is not int or type(seq1) is not int or not 0 <= seq0 <= seq1 + 1 <= 2**63:
        raise FrameError("malformed", f"batch sequence range {seq0!r}..{seq1!r} is not valid")
    events = body.get("events")
    if not isinstance(events, list) or not all(isinstance(e, bytes) for e in events):
        raise FrameError("malformed", "batch events is not a list of packed events")
    if body.get("hello") is not None and not isinstance(body["hello"], dict):
        raise FrameError("malformed", "batch hello is not a map")
    outcomes = body.get("outcomes")
    if outcomes is not None and (not isinstance(outcomes, list) or len(outcomes) > MAX_OUTCOMES):
        raise FrameError("malformed", f"batch outcomes is not a list of at most {MAX_OUTCOMES}")
    return body


def events_budget(
    node: str, stream: str, hello: dict[str, Any] | None = None, max_frame: int = MAX_FRAME
) -> int:
    """Bytes left for the packed events once the frame envelope and `hello` are counted: the
    most a sender may put in one batch (nng drops an oversize message and closes the pipe)."""
    big = 2**63 - 1  # the widest sequence numbers, so the estimate never falls short
    empty = seal(b"\0" * KEY_BYTES, node, BATCH, batch_body(stream, big, big, [], hello))
    # +16: the events array and payload bin headers may each grow by up to 4 bytes when filled
    budget = max_frame - len(empty) - 16
    if budget <= 0:
        raise ValueError(f"frame cap {max_frame} leaves no room for events")
    return budget
