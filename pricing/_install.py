"""Installing one price table file into the installed tables' folder, all or nothing.

The new file is checked together with every table it will price beside (the shipped ones and
the others installed), so a file that passes here loads everywhere. It is written beside its
final name, synced, then renamed over it: a kill at any moment leaves either the old tables or
the new ones in effect, never a half-written file (a leftover `*.partial` is never read).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pricing._installed import (
    PARTIAL,
    RateChange,
    overlay,
    rate_changes,
    read_installed,
)
from pricing._tables import PriceTableError, load_package, parse_table
from pricing._types import ProviderTable

LOCK = ".install.lock"  # not *.toml: never read as a table


@dataclass(frozen=True, slots=True)
class Installed:
    path: Path  # where it now lives
    replaced: bool  # an installed file of that name was there before
    tables: list[ProviderTable]  # the tables now in effect (shipped and installed)
    changes: list[RateChange]  # base rates that differ from before


def install_table(source: Path, directory: Path) -> Installed:
    """Check `source` and install it as `directory/<its name>` (replacing a file of that name).
    Raises `PriceTableError` naming the file, model and field; then nothing changed."""
    if source.suffix != ".toml":
        raise PriceTableError(str(source), "(file)", "a price table's name ends in .toml")
    try:
        text = source.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PriceTableError(str(source), "(file)", f"cannot be read: {exc}") from exc
    target = directory / source.name
    new = parse_table(str(source), text)
    shipped = load_package()
    directory.mkdir(parents=True, exist_ok=True)
    with _installing(directory):  # two installs at once would each check without the other
        present = read_installed(directory)  # a broken installed file stops here, named
        others = [t for t in present if Path(t.file).name != target.name]
        before = overlay(shipped, present)
        after = overlay(shipped, [*others, new])
        replaced = target.exists()
        _write_atomically(directory, target, text)
    changes = rate_changes(before, after, {m.id for m in new.models})
    return Installed(target, replaced, after, changes)


@contextlib.contextmanager
def _installing(directory: Path) -> Iterator[None]:
    """One install at a time in `directory` (an advisory lock the kernel drops with its holder,
    so a killed install never leaves it held)."""
    with open(directory / LOCK, "a") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        yield


def _write_atomically(directory: Path, target: Path, text: str) -> None:
    partial = target.with_name(target.name + PARTIAL)
    try:
        with open(partial, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(partial, target)
    except BaseException:
        with contextlib.suppress(OSError):
            partial.unlink()
        raise
    # the rename itself survives a power cut only once the folder is synced
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
