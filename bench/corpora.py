"""Claude Code homes for `bench.scan` beyond the generated fleet, and appends to them.

The generated fleet's transcripts are mostly long tool results (one usage line per ~20 KB). A
real-shaped home is made of the real transcripts in ../shared/realdata (one usage line per
2–7 KB, as in the wild), copied until it reaches its size, each copy with its own message,
request, session and line ids, so every copy is new calls to every tool.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

WORK = Path(__file__).resolve().parent / ".work"
REALDATA = Path(__file__).resolve().parent.parent.parent / "shared" / "realdata"
REAL_HOMES = ("claude-code-viewer/claude-home", "bitcoin-tax/claude-home")
_IDS = (b'"id":"msg_', b'"requestId":"req_', b'"sessionId":"', b'"uuid":"', b'"parentUuid":"')


def renamed(data: bytes, tag: str) -> bytes:
    """`data` with every id made unique to `tag`."""
    for mark in _IDS:
        data = data.replace(mark, mark + tag.encode())
    return data


def real_shaped_home(mb: int) -> Path:
    """A Claude home of at least `mb` MB of real transcripts (made once, then kept)."""
    home = WORK / f"real-shaped-{mb}mb" / "claude"
    done = home.parent / "done"
    if done.exists():
        return home
    if home.exists():
        shutil.rmtree(home)
    sources = [REALDATA / name for name in REAL_HOMES]
    files = [(h, f) for h in sources for f in sorted((h / "projects").rglob("*.jsonl"))]
    if not files:
        raise FileNotFoundError(f"no real transcripts under {REALDATA}")
    print(f"making a {mb} MB real-shaped Claude home in {home} ...", flush=True)
    total, copy = 0, 0
    while total < mb * 1_000_000:
        for source, file in files:
            rel = file.relative_to(source / "projects")
            target = home / "projects" / f"{rel.parts[0]}-c{copy}" / Path(*rel.parts[1:])
            target.parent.mkdir(parents=True, exist_ok=True)
            data = renamed(file.read_bytes(), f"c{copy}-")
            target.write_bytes(data)
            total += len(data)
        copy += 1
    done.write_text(f"{total}\n")
    return home


class Appends:
    """About `mb` MB of new calls appended across the `count` largest transcripts of `homes`
    (copies of each file's own lines with new ids), and taken back again."""

    def __init__(self, homes: Sequence[Path], mb: float = 10.0, count: int = 10) -> None:
        files = sorted(
            (f for h in homes for f in (h / "projects").rglob("*.jsonl")),
            key=lambda f: f.stat().st_size,
            reverse=True,
        )[:count]
        self.sizes = {f: f.stat().st_size for f in files}
        each = int(mb * 1_000_000 / max(1, len(files)))
        self.blocks: dict[Path, bytes] = {}
        for file in files:
            lines = [ln for ln in file.read_bytes().splitlines(keepends=True) if ln.endswith(b"\n")]
            block, n = b"", 0
            while len(block) < each and lines:
                block += renamed(lines[n % len(lines)], f"append{n // len(lines)}-")
                n += 1
            self.blocks[file] = block

    @property
    def bytes(self) -> int:
        return sum(map(len, self.blocks.values()))

    def apply(self) -> None:
        """Back to the sizes they had, then the new calls appended (same inodes)."""
        for file, size in self.sizes.items():
            with file.open("r+b") as fh:
                fh.truncate(size)
                fh.seek(size)
                fh.write(self.blocks[file])

    def undo(self) -> None:
        for file, size in self.sizes.items():
            with file.open("r+b") as fh:
                fh.truncate(size)
