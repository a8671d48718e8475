"""The scan index: what earlier scans read of each Claude Code transcript, so that a repeat scan
reads only the bytes appended since.

Kept in `$XDG_CACHE_HOME/fleetmeter/scan-index.msgpack` (written whole and renamed into place,
readable by its owner only), and what later scans changed in `scan-index.journal` beside it
(`scan_journal`): a scan after an append to a few files appends their entries and the priced
reports it made, not the whole index (6.7 MB for 200 MB of transcripts) again. Once the journal
holds half as much as the whole index, the next scan writes the index whole (a new generation,
whose journal starts empty). Per file: its (device, inode), size, mtime and ctime when it
was read, its `FileReading` up to the last complete line, and a hash of the bytes just before
that point. A later scan then, per file:

- same (device, inode), size, mtime and ctime, and the mtime safely older than that reading (a
  write in the same clock tick leaves both alike): the reading is used as it is, nothing is read;
- same (device, inode) and size, a new mtime (written, not appended to): read from the start;
- same (device, inode) and at least as long: the hashed window is read again; if it still
  matches, the file is read on from where the reading stopped (appended bytes only), unless it
  was read in the clock tick of a write (then it is read from the start: bytes before the
  window may have changed in that tick);
- anything else (truncated, replaced, rotated under the same name, a window that changed): the
  file is read from the start.

Readings hold token counts, never prices, so a changed price table needs nothing invalidated: it
prices the same readings anew. A reading depends on fleetmeter's reading rules, so the index is
stamped with a hash of their source and dropped whole when they change (a new version). An index
that cannot be decoded is discarded with a one-line warning and written anew; it is never used
for figures. So is the rest of a journal from a record that does not match its CRC on; a record
cut short at its end (a scan killed while writing it) is dropped without a word: the records
before it are the index as the scan before left it. A file rewritten in place to the same size
with its mtime put back, or rewritten before the hashed window and appended to, would not be
noticed: logs are only ever appended to.
"""

from __future__ import annotations

import os
import time

# blake2b from CPython's own module: `import hashlib` loads OpenSSL first (~12 ms cold).
from _blake2 import blake2b
from collections.abc import Iterable
from pathlib import Path
from typing import Final

import msgspec

from node_agent import scan_journal
from node_agent.claude_reading import FileReading, Outcome, read_file
from node_agent.sources.base import FileKind, SourceFile
from shared.regular_file import read_regular

INDEX_NAME: Final = "scan-index.msgpack"
WINDOW_BYTES: Final = 4096
# Younger than this when read, a file's size and mtime may not show a write in the same tick.
RACY_NS: Final = 2_000_000_000

# The modules whose rules shape a reading: any change to them is a new index.
_RULES: Final = (
    "sources/_claude_line.py",
    "sources/_values.py",
    "sources/_claude_limits.py",
    "sources/claude.py",
    "claude_reading.py",
    "tailer.py",
    "scan_index.py",  # the layout of the index itself
    "scan_journal.py",
)
# A journal smaller than this never makes the next scan write the index whole.
JOURNAL_MIN_BYTES: Final = 1 << 20


class Entry(msgspec.Struct, array_like=True, gc=False):
    dev: int
    ino: int
    size: int
    mtime_ns: int
    read_at_ns: int  # wall clock just before the file was read
    window: bytes  # hash of the WINDOW_BYTES before `end`
    end: int  # where the reading stops: just past the file's last complete line
    calls: list[str]  # the message ids of the reading's calls: what files sharing calls share
    # The `FileReading`, still msgpack: a repeat scan decodes only those it merges again. Kept
    # as a msgpack bin, decoded as a view of the index's bytes: its length is in its header,
    # where a nested value (`msgspec.Raw`) had to be walked through to be skipped (~30 M
    # instructions of the appended bench's ~765 M, to load the index).
    reading: memoryview
    # The pickled priced report of the reading's settled solo calls (see `report._file_report`),
    # how many they are, and the key of what their pricing depends on (b"": none kept).
    settled: bytes = b""
    settled_count: int = 0
    settled_key: bytes = b""
    tools: bool = True  # its reading carries tool calls (`FileReading.tools`)
    # The file's ctime when read: what changes it but not the mtime (its permissions taken
    # away, say: the reading is no longer what a read would give) is not taken as unchanged.
    ctime_ns: int = 0

    def kept(self) -> FileReading:
        return decode_reading(self.reading)

    @property
    def racy(self) -> bool:
        """Read in the clock tick of a write: a change in place in that tick (before the
        hashed window) would leave the size, mtime and window alike, so neither the reading
        nor anything priced from it may stand for the file at a later scan."""
        return self.mtime_ns >= self.read_at_ns - RACY_NS


def stored(reading: FileReading) -> memoryview:
    return memoryview(msgspec.msgpack.encode(reading))


decode_reading = msgspec.msgpack.Decoder(FileReading).decode


def calls_of(reading: FileReading) -> list[str]:
    """The message ids of a reading's calls, each once, in order."""
    return list(dict.fromkeys(run.best.group for run in reading.runs if run.best.group is not None))


class _Stamp(msgspec.Struct, array_like=True, gc=False):
    stamp: str  # the head of an index file of any layout


class _IndexFile(msgspec.Struct, array_like=True, gc=False):
    stamp: str
    entries: dict[str, Entry]
    # Priced partial reports of groups of files that share calls, by a key of everything they
    # depend on (see `report.py`): files unchanged since need no merge or pricing again.
    reports: dict[bytes, bytes] = {}
    generation: bytes = b""  # names the journal that goes on from this index (random)


class _Change(msgspec.Struct, array_like=True, gc=False):
    """One scan's record in the journal: the entries it changed (None: dropped), the priced
    reports it made, and the earlier ones it used (the others are dropped, as a whole index
    keeps only the reports its scan used)."""

    entries: dict[str, Entry | None]
    made: dict[bytes, bytes]
    kept: list[bytes]


_decode_change = msgspec.msgpack.Decoder(_Change).decode


class Task(msgspec.Struct, array_like=True, gc=False):
    """One file to read: from the start, or on from `prior` if its window still hashes alike."""

    path: str
    prior: FileReading | None = None
    window: bytes = b""
    # The prior entry's priced settled calls (`Entry.settled`), taken on if the file only grew.
    settled: bytes = b""
    settled_count: int = 0
    settled_key: bytes = b""
    tools: bool = True  # read tool calls too (an outcome view needs them; a sum does not)


class Done(msgspec.Struct, array_like=True, gc=False):
    outcome: Outcome
    entry: Entry | None  # what to keep in the index (None: the file could not be read through)
    resumed: bool = False  # read on from the task's prior reading (the file only grew)


def default_dir() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "fleetmeter"


def rules_stamp() -> str:
    root = Path(__file__).resolve().parent
    digest = blake2b(digest_size=16)
    for name in _RULES:
        digest.update((root / name).read_bytes())
    digest.update((root.parent / "shared" / "events.py").read_bytes())
    return digest.hexdigest()


class ScanIndex:
    def __init__(
        self,
        path: Path,
        entries: dict[str, Entry],
        stamp: str,
        reports: dict[bytes, bytes] | None = None,
        generation: bytes = b"",
        size: int = 0,
    ) -> None:
        self.path = path
        self.entries = entries
        self._stamp = stamp
        self._changed = False
        self._planned: set[str] = set()
        self._reports = reports or {}
        self._used: dict[bytes, bytes] = {}  # reports this scan used or made: the ones kept
        self._made: set[bytes] = set()  # reports this scan made
        self._dirty: set[str] = set()  # files whose entries this scan changed or dropped
        self._generation = generation  # b"": no whole index to go on from (write it whole)
        self._size = size  # of the whole index file, when read
        self._journal_end: int | None = None  # see `scan_journal.Replay.end`
        self._journal_read = 0  # bytes of good records read from the journal
        # The index or its journal could not be read (told at the load): what keeps it from
        # being read (a folder in its place, a cache folder that is a file) mostly keeps it
        # from being written too, which is then not told again: one line a scan.
        self._unreadable = False

    @property
    def journal_path(self) -> Path:
        return self.path.with_name(scan_journal.JOURNAL_NAME)

    @classmethod
    def load(cls, directory: Path) -> tuple[ScanIndex, str | None]:
        """The index in `directory` (empty when there is none yet or it is stale), and a warning
        when there was one that could not be used."""
        path = directory / INDEX_NAME
        stamp = rules_stamp()
        try:
            data = read_regular(path)
        except FileNotFoundError:
            return cls(path, {}, stamp), None
        except OSError as exc:
            index = cls._anew(path, stamp)
            index._unreadable = True
            return index, f"cannot read the scan index {path}: {exc.strerror or exc}"
        try:
            found = msgspec.msgpack.decode(data, type=_IndexFile)  # one parse in the usual case
        except (msgspec.DecodeError, RecursionError) as exc:
            found, damage = None, exc
        try:
            if (found.stamp if found else msgspec.msgpack.decode(data, type=_Stamp).stamp) != stamp:
                return cls._anew(path, stamp), None  # written by other reading rules: of no use
        except (msgspec.DecodeError, RecursionError) as exc:
            found, damage = None, exc
        if found is None:
            warning = f"the scan index {path} is damaged ({damage}): discarded, read anew"
            return cls._anew(path, stamp), warning
        index = cls(path, found.entries, stamp, found.reports, found.generation, len(data))
        return index, index._replay_journal()

    @classmethod
    def _anew(cls, path: Path, stamp: str) -> ScanIndex:
        """An empty index written whole in place of one of no use, whatever the scan reads."""
        index = cls(path, {}, stamp)
        index._changed = True
        return index

    def _replay_journal(self) -> str | None:
        """Apply the journal's records that go on from this whole index; a warning when some
        were damaged (the index is then written whole at the end of the scan)."""
        where = self.journal_path
        try:
            data = scan_journal.read(where)
        except OSError as exc:
            self._generation, self._changed = b"", True  # written whole, the journal anew
            self._unreadable = True
            return f"cannot read the scan index journal {where}: {exc.strerror or exc}"
        if data is None:
            return None
        replay = scan_journal.replay(data, self._generation)
        for body in replay.bodies:
            try:
                change = _decode_change(body)
            except (msgspec.DecodeError, RecursionError):  # whole and checked: written so
                self._generation, self._changed = b"", True
                return f"the scan index journal {where} is damaged: the rest is discarded"
            for name, entry in change.entries.items():
                if entry is None:
                    self.entries.pop(name, None)
                else:
                    self.entries[name] = entry
            kept = {k: blob for k in change.kept if (blob := self._reports.get(k)) is not None}
            kept.update(change.made)
            self._reports = kept
            self._journal_read += len(body)
        self._journal_end = replay.end
        if replay.torn or replay.damage:  # written whole at the end of this scan
            self._generation, self._changed = b"", True
        if replay.damage:
            damage = replay.damage
            return f"the scan index journal {where} is damaged ({damage}): the rest is discarded"
        return None

    def plan(self, path: Path, tools: bool = True) -> Entry | Task:
        """The entry of an unchanged file (its reading is what a read would give), or the
        task that reads it. `tools`: the reading must carry tool calls; an entry read without
        them is read again from the start."""
        name = str(path)
        self._planned.add(name)
        entry = self.entries.get(name)
        if entry is None or (tools and not entry.tools):
            return Task(name, tools=tools)
        try:
            st = os.stat(path)
        except OSError:
            return Task(name, tools=tools)  # the reader says what is wrong with it
        if (st.st_dev, st.st_ino) != (entry.dev, entry.ino) or st.st_size < entry.end:
            return Task(name, tools=tools)
        if entry.racy:
            return Task(name, tools=tools)
        if st.st_size == entry.size and st.st_mtime_ns != entry.mtime_ns:
            # Written but not grown: no append (a line rewritten in place, say), which the
            # window before the reading's end need not show: read it all again.
            return Task(name, tools=tools)
        if (
            st.st_size == entry.size == entry.end
            and st.st_mtime_ns == entry.mtime_ns
            and st.st_ctime_ns == entry.ctime_ns
        ):
            return entry
        try:
            prior = entry.kept()
        except (msgspec.DecodeError, RecursionError):
            return Task(name, tools=tools)  # a damaged reading: read it all again
        return Task(
            name,
            prior,
            entry.window,
            entry.settled,
            entry.settled_count,
            entry.settled_key,
            tools,
        )

    def entry(self, path: Path) -> Entry | None:
        return self.entries.get(str(path))

    def report(self, key: bytes) -> bytes | None:
        found = self._reports.get(key)
        if found is not None:
            self._used[key] = found
        return found

    def keep_report(self, key: bytes, blob: bytes) -> None:
        self._used[key] = blob
        self._made.add(key)
        self._changed = True

    def keep(self, path: Path, entry: Entry | None) -> None:
        name = str(path)
        if entry is None or not _storable(name):
            if self.entries.pop(name, None) is not None:
                self._changed = True
                self._dirty.add(name)
            return
        self.entries[name] = entry
        self._changed = True
        self._dirty.add(name)

    def save(self, whole: bool = False) -> str | None:
        """Write what this scan changed, if anything (`whole`: the whole index, changed or
        not); a warning when it could not be written. Files this scan did not look at are kept
        while they exist (another scan may read them)."""
        gone = [name for name in self.entries if name not in self._planned and not _exists(name)]
        for name in gone:
            del self.entries[name]
        self._dirty.update(gone)
        if not (whole or self._changed or gone or self._used.keys() != self._reports.keys()):
            return None
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            if whole or not self._journaled():
                self._write_whole()
        except OSError as exc:
            if self._unreadable:
                return None
            # The file that failed: the journal is removed after the index is written.
            failed = exc.filename in (self.journal_path, str(self.journal_path))
            what = (
                f"scan index journal {self.journal_path}" if failed else f"scan index {self.path}"
            )
            return f"cannot write the {what}: {exc.strerror or exc}"
        return None

    def _journaled(self) -> bool:
        """Record this scan's changes in the journal; False when the index must be written
        whole instead (none to go on from, a journal grown to half its size, or one that is
        no longer as this scan read it)."""
        if not self._generation:
            return False
        change = _Change(
            {name: self.entries.get(name) for name in self._dirty},
            {key: blob for key, blob in self._used.items() if key in self._made},
            [key for key in self._used if key not in self._made],
        )
        body = msgspec.msgpack.encode(change)
        if self._journal_read + len(body) > max(JOURNAL_MIN_BYTES, self._size // 2):
            return False
        if self._journal_end is None:
            scan_journal.create(self.journal_path, self._generation, body)
            return True
        return scan_journal.append(self.journal_path, self._journal_end, body)

    def _write_whole(self) -> None:
        """The whole index, a new generation: renamed into place over the old one, after which
        the old journal is of no use (one left by a scan killed in between is not read)."""
        _sweep(self.path.parent)
        generation = os.urandom(scan_journal.GENERATION_BYTES)
        whole = _IndexFile(self._stamp, self.entries, self._used, generation)
        blob = msgspec.msgpack.encode(whole)
        temp = self.path.with_name(f".{self.path.name}.{os.getpid()}")
        try:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(blob)
            os.replace(temp, self.path)
        except OSError:
            temp.unlink(missing_ok=True)
            raise
        self.journal_path.unlink(missing_ok=True)


def run_task(task: Task) -> Done:
    """Read the file of `task` (on from its prior reading when the window still matches) and
    what to keep of it."""
    path = Path(task.path)
    try:
        st = os.stat(path)
    except OSError:
        return Done(read_file(path, tools=task.tools), None)
    read_at = time.time_ns()
    prior = task.prior
    if prior is not None and _window(path, prior.end) != task.window:
        prior = None  # rewritten: read it all again
    if prior is not None and task.tools and not prior.tools:
        prior = None  # its lines lack the tool calls wanted now
    outcome = read_file(path, prior, task.tools)
    kept = outcome.kept
    if kept is None:
        return Done(outcome, None)
    window = _window(path, kept.end)
    if window is None:
        return Done(outcome, None)
    entry = Entry(
        st.st_dev,
        st.st_ino,
        st.st_size,
        st.st_mtime_ns,
        read_at,
        window,
        kept.end,
        calls_of(kept),
        stored(kept),
        tools=kept.tools,
        ctime_ns=st.st_ctime_ns,
    )
    return Done(outcome, entry, prior is not None)


def unit_key(context: bytes, files: Iterable[tuple[int, SourceFile]]) -> bytes | None:
    """The key under which a unit of another agent's log files (see `report.plan_units`) is
    kept priced: its files' identities (path, device and inode, size, mtime) with `context`.
    None when it cannot be kept: a file that is not a JSONL log (a SQLite store changes
    through its journal), cannot be stat'ed, or was written too lately for its size and
    mtime to show a write in the same clock tick."""
    digest = blake2b(context, digest_size=16)
    young = time.time_ns() - RACY_NS
    for target, file in files:
        if file.kind not in (FileKind.JSONL, FileKind.JSONL_ZST):
            return None
        try:
            st = os.stat(file.path)
        except OSError:
            return None
        if st.st_mtime_ns >= young:
            return None
        identity = (str(file.path), target, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        digest.update(repr(identity).encode())
    return digest.digest()


def _sweep(folder: Path) -> None:
    """Remove what scans that died while writing the index or the journal left of it (killed,
    nothing of theirs removed their file, `.NAME.PID`): each kill there left a copy of the
    index for good. A file of a live process is left alone (a scan writing it), and so is one
    written in the last minute (a process of another PID namespace sharing the cache)."""
    if os.name != "posix":  # (os.kill(pid, 0) would end the process elsewhere)
        return
    try:
        names = os.listdir(folder)
    except OSError:
        return
    old = time.time_ns() - _LEFT_NS
    for name in names:
        base, _, pid = name.rpartition(".")
        if base not in _TEMPORARY or not pid.isdigit() or int(pid) <= 0:
            continue
        try:
            os.kill(int(pid), 0)
            continue
        except ProcessLookupError:  # gone: its file is of no use
            pass
        except OSError:  # (alive, as another user)
            continue
        try:
            if os.stat(folder / name).st_mtime_ns < old:
                os.unlink(folder / name)
        except OSError:  # (a sweep that fails leaves the index to be written)
            pass


_TEMPORARY: Final = (f".{INDEX_NAME}", f".{scan_journal.JOURNAL_NAME}")
_LEFT_NS: Final = 60_000_000_000


def _storable(name: str) -> bool:
    """Whether msgpack can hold `name`: a path whose bytes are not UTF-8 (decoded with
    surrogate escapes) could not be written, and failed the whole scan; its file is read
    whole at each scan instead."""
    try:
        name.encode()
    except UnicodeEncodeError:
        return False
    return True


def _exists(name: str) -> bool:
    return os.path.lexists(name)


def _window(path: Path, end: int) -> bytes | None:
    start = max(0, end - WINDOW_BYTES)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        try:
            data = os.pread(fd, end - start, start)
        finally:
            os.close(fd)
    except OSError:
        return None
    return blake2b(data, digest_size=16).digest()
