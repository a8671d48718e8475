"""Append tailer for JSONL logs, and streaming readers for whole plain or zstd files.

Behaviour (research/stack.md §6, measured there):

- Binary reads in large chunks from the committed offset. A line is handed out only once its
  `\\n` is on disk; a torn last line is left on disk and read again at the next poll. The
  committed offset therefore always sits just past a complete line, and is what is saved.
  A file at rest may end without its newline (the Codex writer adds it only before its next
  append): `take_tail` hands out the rest a poll found at the end as that last line and commits
  past it; the newline, when it comes, is then skipped (`TailState.owed`), not a new line.
- Truncation: checked whenever the file's size or mtime changed, before reading on. The file is
  shorter than the committed offset, or its first bytes (up to 64) or the window just before the
  committed offset (up to 1 KiB, the end of the last line read) no longer hash as saved
  → restart at 0. The window catches a file truncated and written past the old offset before
  the next poll, whose head is often the same (JSONL lines of one agent start alike).
- Rotation or replace: the path names another (dev, ino) than the open file → drain the old
  file to EOF (its unterminated last line included: the file is finished), then read the new
  one from 0.
- Resume: a saved `TailState` whose (dev, ino), head fingerprint and window still match
  continues at its offset and line number; otherwise the file is read from 0.

Whenever reading restarts at 0 the caller must drop its per-file state (`Source.reset_file`)
before feeding the batch: `Tailer.reset` says so for the batch `poll()` just returned, and
`on_reset` is called at that moment. A batch never mixes lines of two files or of the same file
before and after a reset.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator, Mapping
from functools import partial
from pathlib import Path
from typing import Any, Final

import msgspec
import orjson

CHUNK: Final = 1 << 20  # 1 MiB per read(): few syscalls on a cold scan, bounded memory
DEFAULT_MAX_BATCH: Final = 8 << 20  # bytes per poll(); `more` is set when there is more
FINGERPRINT_BYTES: Final = 64
WINDOW_BYTES: Final = 1024  # hashed just before the offset: the end of the last line read


def fingerprint(head: bytes) -> str:
    """Hash of a file's first bytes (at most 64), to recognise the same file again."""
    return _digest(head[:FINGERPRINT_BYTES])


def _digest(data: bytes) -> str:
    import hashlib  # here, not at the top: a one-shot scan never fingerprints (start-up time)

    return hashlib.blake2b(data, digest_size=8).hexdigest()


# fingerprint(b""), written out so that importing the tailer does not import hashlib
_EMPTY_FP: Final = "e4a6a0577479b2b4"


class TailState(msgspec.Struct, frozen=True):
    """Where a tailer stands in a file; saved with the events read up to it."""

    path: str
    dev: int
    ino: int
    offset: int  # bytes consumed, always just past a complete line
    lineno: int  # lines consumed up to `offset`
    fingerprint: str  # of the first min(64, offset) bytes
    # of the min(1024, offset) bytes before `offset`; "" in states saved before it existed
    # (then only the head is checked until the next read)
    window: str = ""
    # the last line was taken without its newline (`Tailer.take_tail`): one at `offset` ends it
    owed: bool = False

    def to_dict(self) -> dict[str, str | int]:
        return {
            "path": self.path,
            "dev": self.dev,
            "ino": self.ino,
            "offset": self.offset,
            "lineno": self.lineno,
            "fingerprint": self.fingerprint,
            "window": self.window,
            "owed": self.owed,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> TailState:
        """Inverse of `to_dict`; raises ValueError naming the first bad field."""

        def get_int(name: str) -> int:
            value = data.get(name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"tail state: {name!r} must be a non-negative int, got {value!r}")
            return value

        def get_str(name: str) -> str:
            value = data.get(name)
            if not isinstance(value, str):
                raise ValueError(f"tail state: {name!r} must be a string, got {value!r}")
            return value

        return cls(
            path=get_str("path"),
            dev=get_int("dev"),
            ino=get_int("ino"),
            offset=get_int("offset"),
            lineno=get_int("lineno"),
            fingerprint=get_str("fingerprint"),
            window=get_str("window") if "window" in data else "",
            owed=data.get("owed") is True,
        )

    def describes(self, fd: int, st: os.stat_result) -> bool:
        """True when the open file `fd` (fstat `st`) is still the file this state was saved
        for, unchanged up to `offset`: same inode, not shorter, same head, same window."""
        return (
            (self.dev, self.ino) == (st.st_dev, st.st_ino)
            and st.st_size >= self.offset
            and _head_hash(fd, min(FINGERPRINT_BYTES, self.offset)) == self.fingerprint
            and (not self.window or _window_hash(fd, self.offset) == self.window)
        )


def still_describes(state: TailState) -> bool:
    """`TailState.describes` for the file now at the state's path (False when unreadable)."""
    try:
        fd = os.open(state.path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
    except OSError:
        return False
    try:
        return state.describes(fd, os.fstat(fd))
    finally:
        os.close(fd)


def _head_hash(fd: int, length: int) -> str:
    return fingerprint(_pread(fd, length, 0)) if length else _EMPTY_FP


def _window_hash(fd: int, offset: int) -> str:
    size = min(WINDOW_BYTES, offset)
    return _digest(_pread(fd, size, offset - size)) if size else _EMPTY_FP


def _pread(fd: int, size: int, pos: int) -> bytes:
    """Positional read; lseek+read where the platform has no pread (Windows)."""
    if hasattr(os, "pread"):
        return os.pread(fd, size, pos)
    os.lseek(fd, pos, os.SEEK_SET)  # pragma: no cover
    return os.read(fd, size)  # pragma: no cover


class _Splitter:
    """Cuts a byte stream into blocks of complete lines; keeps the unterminated tail without
    quadratic copying."""

    __slots__ = ("_pieces", "pending")

    def __init__(self) -> None:
        self._pieces: list[bytes] = []
        self.pending = 0  # bytes held in the unterminated tail

    def feed(self, chunk: bytes) -> tuple[bytes, int] | None:
        """`(block, end)`: `block[:end]` holds the complete lines of `chunk` (with what was held
        before), without the last newline; None when `chunk` completes no line. Not sliced, so
        a chunk that starts on a line boundary is not copied."""
        nl = chunk.rfind(b"\n")
        if nl < 0:
            if chunk:
                self._pieces.append(chunk)
                self.pending += len(chunk)
            return None
        block, end = chunk, nl
        if self._pieces:
            self._pieces.append(chunk[:nl])
            block = b"".join(self._pieces)
            end = len(block)
        rest = chunk[nl + 1 :]
        self._pieces = [rest] if rest else []
        self.pending = len(rest)
        return block, end

    def tail(self) -> bytes:
        """The unterminated rest, and forget it."""
        rest = b"".join(self._pieces)
        self._pieces = []
        self.pending = 0
        return rest


# A test on the line `data[start:end]` (newline and CR excluded): True when its reader would
# drop it without a word, so it need not be copied out. See `Source.ignores`.
LineTest = Callable[[bytes, int, int], bool]


# `_number` of a reader whose `ignores` is built in: (block, end, lineno, out) -> last lineno.
Numberer = Callable[[bytes, int, int, list[tuple[int, bytes]]], int]


def _number(
    block: bytes,
    end: int,
    lineno: int,
    out: list[tuple[int, bytes]],
    ignores: LineTest | None = None,
) -> int:
    """Append (lineno, line) for the non-empty lines of `block[:end]` to `out`; returns the last
    line number used.

    Blank lines and lines that `ignores` are counted but not handed out; a CR of a CRLF ending
    is dropped. Lines are found with `find` and only the ones handed out are copied: on a cold
    scan most bytes are lines nobody parses.
    """
    find = block.find
    pos = 0
    while True:
        nl = find(b"\n", pos, end)
        stop = end if nl < 0 else nl
        lineno += 1
        if stop > pos and block[stop - 1] == 13:  # CR
            stop -= 1
        if stop > pos and (ignores is None or not ignores(block, pos, stop)):
            out.append((lineno, block[pos:stop]))
        if nl < 0:
            return lineno
        pos = nl + 1


class Tailer:
    """Follows one append-only file across appends, truncation, rotation and restarts.

    Not thread-safe; one poller per file. `poll()` returns new complete lines, each with its
    1-based line number. After it, `state` is the position just past those lines, `reset` tells
    whether the batch restarted a file from 0, and `more` that data is waiting (call again).
    A missing file is waited for; other OS errors (permissions, a directory) propagate.
    `tail` is the unterminated rest found at the end of the file by the last poll (b"" when
    there was none or the poll did not reach the end): not handed out, nor committed, unless
    the caller takes it (`take_tail`).
    """

    def __init__(
        self,
        path: Path | str,
        state: TailState | None = None,
        *,
        on_reset: Callable[[], None] | None = None,
        max_batch: int = DEFAULT_MAX_BATCH,
    ) -> None:
        self.path = Path(path)
        if state is not None and state.path != str(self.path):
            raise ValueError(f"tail state is for {state.path!r}, not {str(self.path)!r}")
        self.on_reset = on_reset
        self.max_batch = max_batch
        self.reset = False
        self.more = False
        self.tail = b""
        self._saved = state  # applied when the file is (re)opened
        self._fd: int | None = None
        self._dev = 0
        self._ino = 0
        self._offset = 0
        self._lineno = 0
        self._fp = _EMPTY_FP
        self._fp_len = 0
        self._window = _EMPTY_FP
        self._owed = False
        self._seen: tuple[int, int] = (-1, -1)  # (size, mtime_ns) at the last check

    @property
    def state(self) -> TailState:
        if self._fd is None and self._saved is not None:
            return self._saved
        return TailState(
            str(self.path),
            self._dev,
            self._ino,
            self._offset,
            self._lineno,
            self._fp,
            self._window,
            self._owed,
        )

    @property
    def is_open(self) -> bool:
        return self._fd is not None

    def tail_line(self) -> tuple[int, bytes] | None:
        """`tail` as the line it would be, numbered after the lines handed out; None when
        there is none (or only a blank)."""
        batch: list[tuple[int, bytes]] = []
        if self.tail:
            _number(self.tail, len(self.tail), self._lineno, batch)
        return batch[0] if batch else None

    def take_tail(self) -> None:
        """Count `tail` as the file's last line (the caller has read it, `tail_line`) and commit
        past it: the newline that may follow later ends it and starts no line."""
        if not self.tail or self._fd is None:
            return
        self._offset += len(self.tail)
        self._lineno += 1
        self._owed = True
        self.tail = b""
        want = min(FINGERPRINT_BYTES, self._offset)
        if want != self._fp_len:
            self._fp, self._fp_len = _head_hash(self._fd, want), want
        self._window = _window_hash(self._fd, self._offset)

    def close(self) -> None:
        """Release the fd (e.g. an idle file); the next poll reopens it like a resume."""
        if self._fd is not None:
            self._saved = self.state
            self._drop_fd()

    def __enter__(self) -> Tailer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def poll(self) -> list[tuple[int, bytes]]:
        """New complete lines since the last poll (possibly none)."""
        self.reset = False
        self.more = False
        self.tail = b""
        out: list[tuple[int, bytes]] = []
        if self._fd is None and not self._open(restart=False):
            return out
        assert self._fd is not None

        try:
            st_path: os.stat_result | None = os.stat(self.path)
        except FileNotFoundError:
            st_path = None
        if st_path is None or (st_path.st_dev, st_path.st_ino) != (self._dev, self._ino):
            # Rotated, replaced or deleted: finish the file we hold before anything else. Only
            # once a newer file exists is the old one's unterminated tail final.
            if not self._read(out, final=st_path is not None) or st_path is None:
                return out
            if out:
                # Never mix two files in one batch: the next poll finds the old file at its
                # end (or drains what was still written to it) and switches then.
                self.more = True
                return out
            self._drop_fd()
            if not self._open(restart=True):
                return out

        st = os.fstat(self._fd)
        seen = (st.st_size, st.st_mtime_ns)
        if seen != self._seen:
            self._seen = seen
            if not self.state.describes(self._fd, st):
                self._restart()
        self._read(out, final=False)
        return out

    # -- internals -------------------------------------------------------------------------

    def _open(self, *, restart: bool) -> bool:
        """Open the path; resume from the saved state when it still describes this file."""
        try:
            # O_NONBLOCK: a FIFO put in the file's place must not block the reader in open()
            fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_BINARY", 0))
        except FileNotFoundError:
            return False
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):  # nothing but a regular file is a log
            os.close(fd)
            return False
        self._fd = fd
        self._dev, self._ino = st.st_dev, st.st_ino
        self._seen = (st.st_size, st.st_mtime_ns)
        saved, self._saved = self._saved, None
        if saved is not None and not restart and saved.describes(fd, st):
            self._offset, self._lineno, self._owed = saved.offset, saved.lineno, saved.owed
            self._fp, self._fp_len = saved.fingerprint, min(FINGERPRINT_BYTES, saved.offset)
            self._window = saved.window or _window_hash(fd, saved.offset)
            return True
        self._offset = self._lineno = 0
        self._fp, self._fp_len, self._window = _EMPTY_FP, 0, _EMPTY_FP
        self._owed = False
        if restart or saved is not None:
            self._signal_reset()
        return True

    def _restart(self) -> None:
        self._offset = self._lineno = 0
        self._fp, self._fp_len, self._window = _EMPTY_FP, 0, _EMPTY_FP
        self._owed = False
        self._signal_reset()

    def _signal_reset(self) -> None:
        self.reset = True
        if self.on_reset is not None:
            self.on_reset()

    def _drop_fd(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _read(self, out: list[tuple[int, bytes]], *, final: bool) -> bool:
        """Append complete lines from the committed offset to `out`; True when EOF was reached.

        A torn tail is not kept between polls but read again from disk next time, so a writer
        that cuts it back or rewrites it is followed exactly. With `final` (the file has been
        superseded) the tail at EOF is handed out as a last line. Stops after max_batch bytes,
        but only once a line was found, so a line longer than the cap still gets through.
        """
        assert self._fd is not None
        split = _Splitter()
        start = self._offset
        if self._owed:
            # The last line was taken without its newline: the newline, once written, ends it.
            ending = _pread(self._fd, 2, start)
            if ending.startswith(b"\n"):
                self._offset += 1
            elif ending == b"\r\n":
                self._offset += 2
            # Not a newline: what follows is a line of its own. Nothing yet (or a lone CR so
            # far): still owed.
            self._owed = ending in (b"", b"\r")
        pos = begin = self._offset
        eof = False
        while True:
            if pos - begin >= self.max_batch and self._offset > begin:
                self.more = True
                break
            chunk = _pread(self._fd, CHUNK, pos)
            if not chunk:
                eof = True
                break
            pos += len(chunk)
            block = split.feed(chunk)
            if block is not None:
                self._lineno = _number(*block, self._lineno, out)
                self._offset = pos - split.pending
        if eof and final and split.pending:
            tail = split.tail()
            self._offset += len(tail)
            self._lineno = _number(tail, len(tail), self._lineno, out)
        elif eof and split.pending:
            self.tail = split.tail()
        want = min(FINGERPRINT_BYTES, self._offset)
        if want != self._fp_len:
            self._fp, self._fp_len = _head_hash(self._fd, want), want
        if self._offset != start:
            self._window = _window_hash(self._fd, self._offset)
        return eof


# -- whole-file readers (one-shot scans, compressed archives) ----------------------------------


TornTail = Callable[[int, bytes], None]


def iter_plain_lines(
    path: Path | str,
    on_torn_tail: TornTail | None = None,
    ignores: LineTest | None = None,
    number: Numberer | None = None,
) -> Iterator[tuple[int, bytes]]:
    """(lineno, line) of a whole JSONL file, streaming. See `_lines` for the last line and
    `_number` for `ignores`; `number`: `_number` with `ignores` built in (a reader's own,
    faster), else None."""
    with open(path, "rb", buffering=0) as fh:
        yield from _lines(iter(lambda: fh.read(CHUNK), b""), on_torn_tail, ignores, number)


class LinesFrom:
    """The complete lines of an open file from byte `start`, numbered on from `lineno`, for a
    reader that keeps where it stopped. Once iterated: `end` is the offset just past the last
    newline, `lineno` that line's number, and `tail` the unterminated rest (not handed out)."""

    def __init__(
        self,
        fd: int,
        start: int,
        lineno: int,
        ignores: LineTest | None,
        number: Numberer | None = None,
    ) -> None:
        """`number`: `_number` with `ignores` built in (a reader's own, faster), else None."""
        self._fd = fd
        self.end = start
        self.lineno = lineno
        self._number: Numberer = number or partial(_number, ignores=ignores)
        self.tail = b""

    def __iter__(self) -> Iterator[tuple[int, bytes]]:
        split = _Splitter()
        read = self.end
        number = self._number
        while chunk := os.pread(self._fd, CHUNK, read):
            read += len(chunk)
            batch: list[tuple[int, bytes]] = []
            if (block := split.feed(chunk)) is not None:
                self.lineno = number(*block, self.lineno, batch)
            self.end = read - split.pending
            yield from batch
        self.tail = split.tail()

    def tail_lines(self) -> list[tuple[int, bytes]]:
        """The unterminated rest as a line (numbered after the complete ones), if kept."""
        batch: list[tuple[int, bytes]] = []
        self._number(self.tail, len(self.tail), self.lineno, batch)
        return batch


def is_json(line: bytes) -> bool:
    """Whether a last line without its newline is complete (else it is still being written)."""
    return _is_json(line)


def iter_head_lines(path: Path | str, end: int) -> Iterator[tuple[int, bytes]]:
    """(lineno, line) of the lines in the first `end` bytes of a file: a committed offset, which
    sits just past a newline or past a last line taken without it (`Tailer.take_tail`).
    Numbered exactly as the tailer numbered them."""

    def chunks() -> Iterator[bytes]:
        with open(path, "rb", buffering=0) as fh:
            remaining = end
            while remaining > 0:
                chunk = fh.read(min(CHUNK, remaining))
                if not chunk:
                    return
                remaining -= len(chunk)
                yield chunk

    split = _Splitter()
    lineno = 0
    for chunk in chunks():
        batch: list[tuple[int, bytes]] = []
        if (block := split.feed(chunk)) is not None:
            lineno = _number(*block, lineno, batch)
        yield from batch
    batch = []
    rest = split.tail()  # a last line taken without its newline
    _number(rest, len(rest), lineno, batch)
    yield from batch


def iter_zst_lines(
    path: Path | str,
    on_torn_tail: TornTail | None = None,
    ignores: LineTest | None = None,
    number: Numberer | None = None,
) -> Iterator[tuple[int, bytes]]:
    """(lineno, line) of a `.jsonl.zst` file, decompressed as a stream (never whole).
    `ignores` and `number` as for `iter_plain_lines`.

    Every frame is read (Codex may write several). A corrupt or truncated stream raises
    `CorruptStreamError` after the lines before the damage have been yielded.
    """
    yield from _lines(_zst_chunks(path), on_torn_tail, ignores, number)


def _lines(
    chunks: Iterator[bytes],
    on_torn_tail: TornTail | None,
    ignores: LineTest | None,
    number: Numberer | None = None,
) -> Iterator[tuple[int, bytes]]:
    """Number the lines of a byte stream.

    An unterminated last line is handed out as a line when nobody asked otherwise: a file at rest
    may end without a newline (the Codex writer repairs it only before its next append). With
    `on_torn_tail`, a last line that is not complete JSON goes there instead: it is most likely
    still being written, which is not an error.
    """
    if number is None:
        number = partial(_number, ignores=ignores)
    split = _Splitter()
    lineno = 0
    for chunk in chunks:
        batch: list[tuple[int, bytes]] = []
        if (block := split.feed(chunk)) is not None:
            lineno = number(*block, lineno, batch)
        yield from batch
    batch = []
    tail = split.tail()
    number(tail, len(tail), lineno, batch)
    if batch and on_torn_tail is not None and not _is_json(batch[0][1]):
        on_torn_tail(*batch[0])
        return
    yield from batch


def _is_json(line: bytes) -> bool:
    try:
        orjson.loads(line)
    except orjson.JSONDecodeError:
        return False
    return True


class CorruptStreamError(ValueError):
    """A compressed file that cannot be decompressed further (damaged or truncated)."""


def _zst_chunks(path: Path | str) -> Iterator[bytes]:
    # zstandard loads a large extension: import it when a compressed file is met, not at start.
    import zstandard

    try:
        yield from _zst_frames(zstandard.ZstdDecompressor(), path)
    except zstandard.ZstdError as exc:
        raise CorruptStreamError(f"{path}: {exc}") from exc


def _zst_frames(dctx: Any, path: Path | str) -> Iterator[bytes]:
    # decompressobj rather than stream_reader: stream_reader ends silently on a truncated frame
    # and, by default, after the first frame.
    dobj = dctx.decompressobj()
    in_frame = False
    with open(path, "rb", buffering=0) as fh:
        # Compressed reads are smaller: JSONL inflates about tenfold.
        while raw := fh.read(max(1, CHUNK // 8)):
            while raw:
                out = dobj.decompress(raw)
                in_frame = True
                if out:
                    yield out
                if not dobj.eof:
                    break
                raw = dobj.unused_data
                dobj = dctx.decompressobj()
                in_frame = False
    if in_frame:
        raise CorruptStreamError(f"{path}: compressed stream ends inside a frame (truncated)")
