"""Helpers every writer shares: seeded ids, millisecond timestamps, byte-counting line sinks.

Everything random is drawn from `random.Random` instances seeded through `sub_seed`, never from
the global generator or `hash()` (salted per process), so the same seed gives the same bytes.
"""

from __future__ import annotations

import hashlib
import random
import re
import string
import uuid
from collections.abc import Generator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO, Self, TypeVar

import orjson
import zstandard

T = TypeVar("T")

B62 = string.digits + string.ascii_uppercase + string.ascii_lowercase
HEX = "0123456789abcdef"


def drain(steps: Generator[Any, None, T]) -> T:
    """Run a step-wise session writer to its end at once (bulk generation); returns its result."""
    while True:
        try:
            next(steps)
        except StopIteration as done:
            result: T = done.value
            return result


def sub_seed(seed: int, *parts: object) -> int:
    """A seed for one named part of the corpus (stable across processes and runs)."""
    digest = hashlib.blake2b(repr((seed, *parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def child_rng(seed: int, *parts: object) -> random.Random:
    return random.Random(sub_seed(seed, *parts))


def b62(rng: random.Random, n: int) -> str:
    return "".join(rng.choices(B62, k=n))


def hexid(rng: random.Random, n: int) -> str:
    return "".join(rng.choices(HEX, k=n))


def uuid4(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def uuid7(rng: random.Random, at: datetime) -> str:
    """A UUIDv7 (time-ordered), as Codex and Gemini use for thread and message ids."""
    ms = int(at.timestamp() * 1000)
    value = (ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76
    value |= rng.getrandbits(12) << 64
    value |= 0b10 << 62
    value |= rng.getrandbits(62)
    return str(uuid.UUID(int=value))


def ms(at: datetime) -> datetime:
    """Truncate to whole milliseconds: every written timestamp has ms precision, so must truth."""
    return at.replace(microsecond=at.microsecond - at.microsecond % 1000)


def after(at: datetime, seconds: float) -> datetime:
    return ms(at + timedelta(seconds=seconds))


def iso_ms(at: datetime) -> str:
    """UTC ISO-8601 with milliseconds and `Z`, the timestamp form all JSONL agents write."""
    at = at.astimezone(UTC)
    return at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"


def epoch_ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


def utc_day(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%d")


_NON_ALNUM = re.compile(r"[^A-Za-z0-9]")


def claude_project_slug(cwd: str) -> str:
    """Claude Code's project dir name: every non-alphanumeric character becomes `-`."""
    return _NON_ALNUM.sub("-", cwd)


@dataclass(slots=True)
class ByteCounter:
    """Bytes written to disk by one generation run (compressed size for `.zst` files)."""

    total: int = 0


class LineSink:
    """Appends JSON lines to a plain or zstd-compressed file, counting bytes and lines.

    `lines` counts newline-terminated lines, so a parse problem can be located by line number.
    With `flush_each` the data reaches the file after every record, as a live agent's would.
    """

    def __init__(
        self,
        path: Path,
        *,
        compress: bool = False,
        counter: ByteCounter | None = None,
        flush_each: bool = False,
    ) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.lines = 0
        self.bytes = 0
        self._counter = counter
        self._flush_each = flush_each
        self._compress = compress
        self._raw: BinaryIO = open(path, "ab", buffering=1 << 20)  # noqa: SIM115 (closed in close())
        self._out: BinaryIO = self._raw
        if compress:
            # One zstd frame per file, as Codex's compression worker writes it.
            self._out = zstandard.ZstdCompressor(level=3).stream_writer(self._raw, closefd=False)
        self._closed = False

    def obj(self, value: object) -> None:
        self.raw(orjson.dumps(value) + b"\n")

    def raw(self, data: bytes) -> None:
        self._out.write(data)
        self.lines += data.count(b"\n")
        if not self._compress:
            self.bytes += len(data)
            if self._counter is not None:
                self._counter.total += len(data)
        if self._flush_each:
            self.flush()

    def flush(self) -> None:
        self._out.flush()
        if self._out is not self._raw:
            self._raw.flush()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._out is not self._raw:
            self._out.close()
        self._raw.close()
        if self._compress:
            self.bytes = self.path.stat().st_size
            if self._counter is not None:
                self._counter.total += self.bytes

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
