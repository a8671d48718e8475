"""The digest of some files' contents (the pricing code and tables a kept priced report depends
on, say), kept in the scan index under a key of the files' stat: a scan after an append reads
and hashes none of them again while they stat alike (on a cold disk, ~6 ms of small reads).

A stat is trusted as a kept answer's is (`scan_answer.signature`): only when each file's mtime
and ctime are safely older than the stat (a write in the same clock tick could leave it alike);
a file that cannot be stat'ed, or one that young, is read every time and its digest not kept.
"""

from __future__ import annotations

import time

# blake2b from CPython's own module: `import hashlib` loads OpenSSL first (~12 ms cold).
from _blake2 import blake2b
from collections.abc import Sequence

from node_agent.scan_answer import RACY_NS, UnstatableError, signature, too_young
from node_agent.scan_index import ScanIndex

DIGEST_BYTES = 16


def contents_digest(paths: Sequence[str], index: ScanIndex | None) -> bytes:
    """A digest of each of `paths` with its contents (what an unreadable one raises, in its
    place), taken from `index` when they stat as when it was kept there."""
    key = _stat_key(paths) if index is not None else None
    if index is not None and key is not None:
        kept = index.report(key)
        if kept is not None and len(kept) == DIGEST_BYTES:
            return kept
    digest = blake2b(digest_size=DIGEST_BYTES)
    for path in paths:
        try:
            with open(path, "rb") as fh:
                data = fh.read()
        except OSError as exc:
            data = repr(exc).encode()
        digest.update(path.encode("utf-8", "surrogateescape") + b"\0")
        digest.update(len(data).to_bytes(8, "little") + data)
    found = digest.digest()
    if index is not None and key is not None:
        index.keep_report(key, found)
    return found


def _stat_key(paths: Sequence[str]) -> bytes | None:
    """The key of `paths` as they stat now; None when one cannot be trusted to show a change."""
    young = time.time_ns() - RACY_NS
    digest = blake2b(b"contents-by-stat", digest_size=DIGEST_BYTES)
    for path in paths:
        try:
            sig = signature(path)
        except UnstatableError:
            return None
        if sig is None or too_young(sig, young):
            return None
        digest.update(repr((path, sig)).encode("utf-8", "surrogateescape"))
    return digest.digest()
