"""Read a JSONL file (plain or zstd-compressed) once, front to back, as numbered lines.

For one-shot scans. Streams in large binary chunks, so a multi-GB rollout never sits in memory.
The unterminated last line is yielded too: a file at rest may legitimately end without a newline
(the Codex writer repairs it only before its next append); if it was torn mid-write it fails to
parse and the source reports it with its line number. The daemon uses `node_agent.tailer`
instead, which holds such a line until its newline arrives.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import zstandard

from node_agent.sources.base import FileKind

CHUNK = 1 << 20


def iter_lines(path: Path, kind: FileKind) -> Iterator[tuple[int, bytes]]:
    """Yield (1-based line number, line without newline) for every non-empty line."""
    with path.open("rb") as raw:
        if kind is FileKind.JSONL_ZST:
            with zstandard.ZstdDecompressor().stream_reader(raw) as stream:
                yield from _split(stream)
        else:
            yield from _split(raw)


def _split(stream: BinaryIO | zstandard.ZstdDecompressionReader) -> Iterator[tuple[int, bytes]]:
    lineno = 0
    pending = b""
    while chunk := stream.read(CHUNK):
        lines = (pending + chunk).split(b"\n")
        pending = lines.pop()
        for line in lines:
            lineno += 1
            if line.strip():
                yield lineno, line
    if pending.strip():
        yield lineno + 1, pending
