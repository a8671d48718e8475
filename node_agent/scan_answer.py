"""Kept answers: a repeat `node-agent scan` with nothing changed prints what the last one printed,
after a stat of everything that answer depended on, without loading the reading engine.

A scan that ends cleanly (exit 0, nothing on stderr, no outcome view) keeps its output in
`$XDG_CACHE_HOME/fleetmeter/answers/`, one file per query, under a key of everything besides
files that its output depends on: the command line, the working directory, the environment (but
for a few variables a shell changes between commands), the host name and the interpreter. With
it go the dependencies: every file and folder below the paths scanned and the homes read (a new,
removed, renamed or grown file changes its folder's or its own stat), the config files looked
for, the installed and shipped price tables, and fleetmeter's own code (every module the scan
loaded, and the folders of `sys.path`), each with its stat (type, device, inode, size, mtime and
ctime) or its absence. A later scan with the same key whose dependencies all stat alike prints
the kept output; anything else runs the full scan, which keeps its answer anew.

An answer is kept only when every dependency's mtime and ctime are safely older than the scan's
start: a change during the scan, or in the same clock tick as a stat, could otherwise leave the
stat alike and the output stale. A damaged answer file (it carries a hash of its body) is
discarded with a one-line warning, never printed. Files are written whole and renamed into
place, so concurrent scans never see a half-written one.

Imports only what an interpreter has loaded at start-up anyway (and the builtin marshal and
blake2, and `shared.regular_file`, which imports nothing more): this runs before anything else
of a scan. On a cold disk a second thread stats the
dependencies from the last one back (`metadata_ahead`).
"""

from __future__ import annotations

import marshal
import os
import stat
import sys
import time
from _blake2 import blake2b

from shared.regular_file import read_regular

# Not `typing.TYPE_CHECKING`: typing and collections.abc are not loaded at start-up (~3 ms).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence
    from typing import Final

FOLDER: Final = "answers"
_MAGIC: Final = b"fleetmeter-answer-1\n"
_DIGEST: Final = 16
# Younger than this at the scan's start, a stat may not show a write in the same clock tick.
RACY_NS: Final = 2_000_000_000
MAX_KEPT: Final = 32  # answers kept per user: one per query asked lately
# Dependencies stat'ed before a cold disk is told from a warm one, and how long they take at
# most when warm (~2 us each; one read from the disk takes ~0.1 ms).
_PROBE: Final = 32
_COLD_NS: Final = 1_000_000
# Dependencies checked first for being the last modified (see `ordered`).
_NEWEST: Final = 16
# What a shell changes between two commands without changing what a scan prints.
_VOLATILE_ENV: Final = frozenset(
    {"_", "OLDPWD", "PWD", "SHLVL", "SSH_CLIENT", "SSH_CONNECTION", "SSH_TTY", "WINDOWID"}
)

# (st_mode, st_dev, st_ino, st_size, st_mtime_ns, st_ctime_ns); None: the path does not exist.
Signature = tuple[int, int, int, int, int, int] | None
Dependency = tuple[str, Signature]


class UnstatableError(OSError):
    """A dependency that could be neither stat'ed nor found absent (permissions, say)."""


def answers_dir() -> str:
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "fleetmeter", FOLDER)


def answer_key(argv: Sequence[str]) -> bytes:
    """What a scan's output depends on besides files: the same key and the same files, the
    same output."""
    digest = blake2b(_MAGIC, digest_size=_DIGEST)
    env = sorted((k, v) for k, v in os.environ.items() if k not in _VOLATILE_ENV)
    for part in (sys.version, sys.executable, os.getcwd(), os.uname().nodename, *argv):
        digest.update(part.encode("utf-8", "surrogateescape") + b"\0")
    for name, value in env:
        digest.update(f"{name}={value}".encode("utf-8", "surrogateescape") + b"\0")
    return digest.digest()


def signature(path: str) -> Signature:
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        raise UnstatableError(exc.errno, exc.strerror, path) from exc
    return (st.st_mode, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _path_of(key: bytes) -> str:
    return os.path.join(answers_dir(), key.hex())


def serve(argv: Sequence[str]) -> bool:
    """Print the kept answer of `argv` (`scan ...`) when nothing it depends on changed; False
    (nothing printed) when the scan must run."""
    if "--no-cache" in argv:
        return False
    try:
        key = answer_key(argv)  # (the working directory may be gone: the full scan copes)
    except OSError:
        return False
    path = _path_of(key)
    try:
        blob = read_regular(path)
    except OSError:
        return False
    kept = _decoded(blob, key)
    if kept is None:
        print(
            f"node-agent scan: the kept answer {path} is damaged: discarded, scanning anew",
            file=sys.stderr,
        )
        _remove(path)
        return False
    deps, out = kept
    started = time.perf_counter_ns()
    helper = None
    try:
        for at, (name, sig) in enumerate(deps):
            if at == _PROBE and time.perf_counter_ns() - started > _COLD_NS:
                from node_agent.metadata_ahead import stat_behind

                # A cold disk: a second thread stats them from the last one back.
                helper = stat_behind([name for name, _ in deps[at:]])
            if signature(name) != sig:
                return False  # (a helper goes on: the full scan stats them all too)
    except UnstatableError:
        return False
    if helper is not None:
        helper.stop()
    _print(out)
    _touch(path)  # used now: the last to be pruned (`_prune`)
    return True


def _touch(path: str) -> None:
    try:  # noqa: SIM105 (contextlib is not loaded at start-up)
        os.utime(path)
    except OSError:  # (gone meanwhile, or not ours to touch: only its turn to be pruned)
        pass


def _print(out: bytes | str) -> None:
    """Write the kept output; a reader gone, a full disk or no fd 1 is told in one line and
    the exit status, as the full scan tells it (`entry._leave`)."""
    try:
        if isinstance(out, bytes):
            sys.stdout.buffer.write(out)
        else:
            sys.stdout.write(out)
        sys.stdout.flush()
    except BrokenPipeError:
        _fail("output closed early (broken pipe): the rest was not written")
    except AttributeError:  # sys.stdout is None: started without fd 1
        _fail("no standard output to write to")
    except (OSError, ValueError) as exc:
        _fail(f"could not write the output: {exc}")


def _fail(why: str) -> None:
    try:  # noqa: SIM105 (contextlib is not loaded at start-up)
        print(f"node-agent scan: {why}", file=sys.stderr)
        sys.stderr.flush()
    except (OSError, ValueError, AttributeError):
        pass
    os._exit(1)  # buffered output left behind would fail again at the interpreter's exit


def _decoded(blob: bytes, key: bytes) -> tuple[list[Dependency], bytes | str] | None:
    """The dependencies and output of an answer file; None when it is not one for `key`."""
    head = len(_MAGIC) + _DIGEST
    if not blob.startswith(_MAGIC) or len(blob) < head:
        return None
    body = blob[head:]
    if blake2b(body, digest_size=_DIGEST).digest() != blob[len(_MAGIC) : head]:
        return None
    try:
        found = marshal.loads(body)
    except (EOFError, ValueError, TypeError):
        return None
    if not (isinstance(found, tuple) and len(found) == 3 and found[0] == key):
        return None
    deps, out = found[1], found[2]
    if not isinstance(out, bytes | str) or not isinstance(deps, tuple):
        return None
    # The hash says these are the bytes written: only their shape is checked, in one pass.
    if not all(type(dep) is tuple and len(dep) == 2 and type(dep[0]) is str for dep in deps):
        return None
    return list(deps), out


def gathered(
    trees: Iterable[str], paths: Iterable[str], started_ns: int, found: dict[str, Signature]
) -> bool:
    """Add every entry at and below each of `trees` and each of `paths` to `found`, with its
    signature (a path already there is not stat'ed again); False when no answer may be kept
    from them: one is too young (changed within the racy window of the scan's start,
    `started_ns`, wall clock), or they cannot all be known (a folder that cannot be listed, a
    link to a folder below a tree: what is behind it could change unseen). Stops at the first
    such entry (after an append, a young file is met early). A scan stats most of them while
    it reads and only the rest (the code it loaded since) at its end (`answer_deps`): any time
    after `started_ns` will do, a change after a stat changes that stat next time."""
    young = started_ns - RACY_NS
    try:
        for path in paths:
            if path not in found and too_young(found.setdefault(path, signature(path)), young):
                return False
        for tree in trees:
            if not _walk(tree, found, young):
                return False
    except UnstatableError:
        return False
    return True


def ordered(found: dict[str, Signature]) -> list[Dependency]:
    """The dependencies in the order a later check stats them."""
    # The last changed first: a transcript written lately is the likeliest to have grown by the
    # next scan, whose check then stops at once instead of after a stat of most of the others.
    # The rest as found, folder by folder: on a cold disk the check's helper (`metadata_ahead`)
    # meets it sooner than in an order that goes from folder to folder (~18 ms against ~23).
    items = list(found.items())
    newest = sorted(items, key=_newest_first)[:_NEWEST]
    first = {name for name, _ in newest}
    return newest + [dep for dep in items if dep[0] not in first]


def _newest_first(dep: Dependency) -> int:
    sig = dep[1]
    return -sig[4] if sig is not None else 0  # (mtime: what a write moves)


def too_young(sig: Signature, young: int) -> bool:
    """Changed at or after `young` (ns): its stat may not show a write in the same tick."""
    return sig is not None and (sig[4] >= young or sig[5] >= young)


def _walk(tree: str, found: dict[str, Signature], young: int) -> bool:
    sig = signature(tree)
    found[tree] = sig
    if too_young(sig, young):
        return False
    if sig is None or not stat.S_ISDIR(sig[0]):
        return True
    folders = [tree]
    while folders:
        folder = folders.pop()
        try:
            with os.scandir(folder) as entries:
                for entry in entries:
                    if entry.is_symlink() and entry.is_dir():
                        return False
                    sig = signature(entry.path)
                    if too_young(sig, young):
                        return False
                    found[entry.path] = sig
                    if sig is not None and stat.S_ISDIR(sig[0]):
                        folders.append(entry.path)
        except OSError:
            return False
    return True


def code_paths() -> list[str]:
    """The files of every module loaded but the standard library's (the interpreter's version
    in the key stands for them: fewer files to stat on a cold start), and the folders modules
    are looked up in: what a new fleetmeter (or a changed library it uses) changes."""
    stdlib = os.path.dirname(os.__file__) + os.sep
    files = [
        name
        for module in list(sys.modules.values())
        if isinstance(name := getattr(module, "__file__", None), str)
        and not (name.startswith(stdlib) and _outside_packages(name[len(stdlib) :]))
    ]
    return files + [p for p in sys.path if p]


def _outside_packages(below_stdlib: str) -> bool:
    parts = below_stdlib.split(os.sep)
    return "site-packages" not in parts and "dist-packages" not in parts


def keep(argv: Sequence[str], deps: Sequence[Dependency], out: bytes | str) -> None:
    """Keep `out` as the answer of `argv` with its `dependencies`; a cache that cannot be
    written is only a slower next scan."""
    try:
        key = answer_key(argv)
    except OSError:  # the working directory is gone: no key (`serve` finds none either)
        return
    body = marshal.dumps((key, tuple(deps), out))
    blob = _MAGIC + blake2b(body, digest_size=_DIGEST).digest() + body
    path = _path_of(key)
    temp = f"{path}.{os.getpid()}.partial"
    try:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(blob)
        os.replace(temp, path)
    except OSError:
        _remove(temp)
        return
    _prune(os.path.dirname(path))


def _prune(folder: str) -> None:
    """Only the MAX_KEPT answers used or made last stay."""
    try:
        with os.scandir(folder) as entries:
            kept = [(e.stat().st_mtime_ns, e.path) for e in entries if e.is_file()]
    except OSError:
        return
    kept.sort(reverse=True)
    for _, path in kept[MAX_KEPT:]:
        _remove(path)


def _remove(path: str) -> None:
    try:  # noqa: SIM105 (contextlib is not loaded at start-up)
        os.unlink(path)
    except OSError:
        pass
