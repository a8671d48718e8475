"""A parsed-table cache, so a short-lived `node-agent scan` does not re-parse the TOML each run.

Parsing and checking the shipped tables costs ~90 ms, a third of a small scan. The cache holds
the parsed tables under a key made of the table texts and of this package's own loader and type
code, so an edited table or a new fleetmeter version can never be served stale. It lives in the
user's own cache dir; anything wrong with it (missing, unreadable, from another version, a
read-only home) just means parsing again.
"""

from __future__ import annotations

import copyreg
import io
import os
import pickle
import sys
import time

# blake2b straight from CPython's own module: `import hashlib` loads OpenSSL's libcrypto first,
# which costs a cold start about 12 ms.
from _blake2 import blake2b
from collections.abc import Callable, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any

from pricing._types import ProviderTable
from shared.regular_file import read_regular

_CODE = ("_types.py", "_tables.py", "_cache.py")


def _proxy(data: dict[Any, Any]) -> MappingProxyType[Any, Any]:
    return MappingProxyType(data)


def _reduce_proxy(proxy: MappingProxyType[Any, Any]) -> tuple[Any, ...]:
    # The mappingproxy type cannot be named in a pickle; a module function can.
    return (_proxy, (dict(proxy),))


class _Pickler(pickle.Pickler):
    # The tables keep read-only mappings; teach this pickler (only) to carry them.
    dispatch_table = {**copyreg.dispatch_table, MappingProxyType: _reduce_proxy}


def _dumps(tables: list[ProviderTable]) -> bytes:
    buffer = io.BytesIO()
    _Pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump(tables)
    return buffer.getvalue()


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "fleetmeter"


def _key(items: Sequence[tuple[str, str]]) -> str:
    digest = blake2b(sys.version.encode())
    here = Path(__file__).parent
    for name in _CODE:
        try:
            digest.update((here / name).read_bytes())
        except OSError:
            digest.update(name.encode())
    for name, text in items:
        digest.update(name.encode() + b"\0" + text.encode() + b"\0")
    return digest.hexdigest()[:32]


# A partial cache file older than this is no scan's that still writes it (one is written in
# milliseconds): it was left by a scan killed while writing, and would stay for good.
_PARTIAL_LEFT_S = 60.0


def _sweep_partial(folder: Path) -> None:
    left = time.time() - _PARTIAL_LEFT_S
    for partial in folder.glob(".price-tables-*"):
        try:
            if partial.stat().st_mtime < left:
                partial.unlink()
        except OSError:  # (gone meanwhile: another scan swept it)
            pass


Parse = Callable[[Sequence[tuple[str, str]]], list[ProviderTable]]


def cached_tables(items: Sequence[tuple[str, str]], parse: Parse) -> list[ProviderTable]:
    path = cache_dir() / f"price-tables-{_key(items)}.pickle"
    try:
        tables = pickle.loads(read_regular(path))
        if isinstance(tables, list) and all(isinstance(t, ProviderTable) for t in tables):
            return tables
    except Exception:  # a bad cache must never stop a scan: parse instead
        pass
    tables = parse(items)
    import tempfile  # only on a miss: its import (shutil, random, bz2) costs every start

    try:
        blob = _dumps(tables)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".price-tables-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(blob)
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
        for stale in path.parent.glob("price-tables-*.pickle"):  # of other versions or tables
            if stale != path:
                stale.unlink(missing_ok=True)
        _sweep_partial(path.parent)
    except Exception:  # no writable cache dir, or anything else: parse each time
        pass
    return tables
