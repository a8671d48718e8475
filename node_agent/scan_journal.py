"""The scan index's journal: what each scan changed since the index was last written whole, as
records appended to one file, so that a scan after an append to a few transcripts writes a few
entries, not the whole index again.

The file starts with a head naming the generation of the whole index it goes on from (a journal
left by an older one is not used). Each record is its length, a CRC-32 of its body and the body,
written with one `write` in append mode. (A CRC, not a cryptographic hash: it is there to catch
damage in an owner-only cache, and it costs a fifth of blake2b's time: ~0.2 ms per MB, which an
appended scan pays once writing its record and each later scan once reading it.) A scan killed
while writing leaves its record torn at the end: the records before it are the index as the scan
before left it, and the torn one is dropped without a word. A record that is whole but does not
match its CRC was damaged (a disk, an editor): it and those after it are dropped, with a
warning; the index goes on from the records before it. Either way the figures never come from
a damaged record.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Final, NamedTuple
from zlib import crc32

from shared.regular_file import read_regular

JOURNAL_NAME: Final = "scan-index.journal"
MAGIC: Final = b"fleetmeter-scan-journal-1\n"
GENERATION_BYTES: Final = 16
_LENGTH: Final = 4
_DIGEST: Final = 4
_RECORD_HEAD: Final = _LENGTH + _DIGEST


class Replay(NamedTuple):
    """The good records of a journal, in order, and what a scan may do with the file next."""

    bodies: list[bytes]
    # How long the file was when read, if it is whole and of this generation: a record may be
    # appended to it while it still is that long. None: create it anew (there was none, or it
    # was an older generation's).
    end: int | None
    damage: str | None = None  # why records were dropped (a torn last one is not damage)
    torn: bool = False  # the last record was cut short (a scan killed while writing it)


def head(generation: bytes) -> bytes:
    return MAGIC + generation


def record(body: bytes) -> bytes:
    digest = crc32(body).to_bytes(_DIGEST, "little")
    return len(body).to_bytes(_LENGTH, "little") + digest + body


def replay(data: bytes, generation: bytes) -> Replay:
    """The records of the journal `data` that go on from the whole index of `generation`."""
    start = head(generation)
    if not generation or not data.startswith(start):
        return Replay([], None)  # another generation's, or a head cut short: of no use
    bodies: list[bytes] = []
    at = len(start)
    while at < len(data):
        if at + _RECORD_HEAD > len(data):
            return Replay(bodies, None, torn=True)
        length = int.from_bytes(data[at : at + _LENGTH], "little")
        end = at + _RECORD_HEAD + length
        if end > len(data):
            return Replay(bodies, None, torn=True)
        body = data[at + _RECORD_HEAD : end]
        if crc32(body).to_bytes(_DIGEST, "little") != data[at + _LENGTH : at + _RECORD_HEAD]:
            dropped = f"record {len(bodies) + 1} does not match its CRC"
            return Replay(bodies, None, damage=dropped)
        bodies.append(body)
        at = end
    return Replay(bodies, at)


def read(path: Path) -> bytes | None:
    """The journal's bytes; None when there is none. A pipe or a device in its place must
    neither block the scan nor fill its memory (OSError)."""
    try:
        return read_regular(path)
    except FileNotFoundError:
        return None


def append(path: Path, expected_end: int, body: bytes) -> bool:
    """Append a record of `body` to the journal if it is still `expected_end` bytes long (as
    this scan read it); False when it is not (another scan wrote it meanwhile, or it is gone):
    the caller writes the index whole instead."""
    data = record(body)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size != expected_end:
            return False
        _write_all(fd, data)
    finally:
        os.close(fd)
    return True


def create(path: Path, generation: bytes, body: bytes) -> None:
    """A journal of one record, written aside and renamed into place: a scan killed meanwhile
    leaves the journal as it was (OSError when it cannot be written)."""
    temp = path.with_name(f".{path.name}.{os.getpid()}")
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            _write_all(fd, head(generation) + record(body))
        finally:
            os.close(fd)
        os.replace(temp, path)
    except OSError:
        temp.unlink(missing_ok=True)
        raise


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
