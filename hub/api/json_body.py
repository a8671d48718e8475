"""A JSON body encoded a piece at a time, byte for byte what `orjson.dumps` makes of it whole.

A month's session-level report is ~19,000 rows: held whole as dicts and then as one bytes
object it took the hub from ~97 MB to ~184 MB. Encoded a few hundred rows at a time, only
the report's sums and one piece are held at once.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
from collections.abc import Iterator, Mapping
from itertools import islice
from typing import Any, Final

import orjson

ROWS_PER_PIECE: Final = 500
TRIM_AFTER_ROWS: Final = 2_000  # a body this long: collect, and hand freed heap back


def json_pieces(body: Mapping[str, Any], per_piece: int = ROWS_PER_PIECE) -> Iterator[bytes]:
    """`orjson.dumps(body)` in pieces; a value that is an iterator (rows made as they are
    asked for) is encoded as a JSON array, `per_piece` items at a time."""
    sep = b"{"
    streamed = 0
    for key, value in body.items():
        head = sep + orjson.dumps(key) + b":"
        sep = b","
        if not isinstance(value, Iterator):
            yield head + orjson.dumps(value)
            continue
        yield head + b"["
        comma = b""
        while piece := list(islice(value, per_piece)):
            yield comma + b",".join(orjson.dumps(item) for item in piece)
            comma = b","
            streamed += len(piece)
        yield b"]"
    yield b"}" if sep == b"," else b"{}"
    if streamed >= TRIM_AFTER_ROWS:
        # A full collection now, at the end of a long answer, rather than in the middle of a
        # later short one (it was 80-120 ms in the report endpoint's p99); then the heap's
        # free pages go back.
        gc.collect()
        release_free_heap()


def _trim() -> Any:
    """glibc's malloc_trim, or None (musl, macOS: they return freed memory by themselves)."""
    name = ctypes.util.find_library("c")
    try:
        return getattr(ctypes.CDLL(name), "malloc_trim", None) if name else None
    except OSError:
        return None


_MALLOC_TRIM: Final = _trim()


def release_free_heap() -> None:
    """Give the heap's free pages back to the OS: after a large report, glibc keeps tens of MB
    of freed small objects in its arenas, which the process's resident size then carries."""
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)
