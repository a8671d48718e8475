"""Pre-built text the writers reuse: file contents, command output, prose, opaque blobs.

Tool results (file reads, command output) are most of the bytes of real agent logs, so the
corpus must carry them for a benchmark to be honest. Building them once and reusing the
strings keeps generation fast; choosing among them with the session's rng keeps it seeded.
"""

from __future__ import annotations

import base64
import random
from dataclasses import dataclass

_WORDS = [
    "request",
    "session",
    "budget",
    "ledger",
    "price",
    "token",
    "cache",
    "window",
    "limit",
    "profile",
    "machine",
    "agent",
    "event",
    "reader",
    "writer",
    "offset",
    "cursor",
    "record",
    "batch",
    "commit",
    "rollback",
    "parser",
    "tailer",
    "outbox",
    "config",
    "value",
    "handler",
    "client",
    "server",
    "socket",
    "frame",
    "signature",
    "verify",
    "timeout",
    "retry",
    "backoff",
    "metric",
    "counter",
    "snapshot",
    "index",
    "schema",
    "migration",
    "column",
    "table",
    "query",
    "filter",
    "result",
    "error",
    "status",
    "reset",
]
_IDENTS = [
    f"{a}_{b}"
    for a in ("load", "parse", "build", "apply", "check", "emit", "merge", "fetch", "write")
    for b in ("config", "events", "rows", "tokens", "window", "state", "frame", "batch")
]
_CODE_LINES = (
    "def {i}(self, {w}: {t}) -> {t}:",
    '    """{W} the {w} for one {w2}."""',
    "    if {w} is None:",
    "        return self._{w2}",
    "    for {w} in self.{w2}s:",
    "        total += {w}.{w2}",
    "    result = {i}({w}, {w2}=True)",
    '    raise ValueError(f"bad {w}: {{{w}!r}}")',
    "class {W}{W2}:",
    "    {w}: {t} = field(default_factory={t})",
    "import {w}",
    "from .{w} import {W}{W2}",
    "    return {{'{w}': {w}, '{w2}': len({w2})}}",
    "    # keep the {w} stable across restarts",
    "export function {i}({w}: {t}): {t} {{",
    "  const {w} = await {i}({w2});",
    "  if (!{w}) throw new Error('{w2} missing');",
    "}}",
    "",
)
_TYPES = ("int", "str", "bytes", "float", "dict", "list", "Path", "Decimal")
_CMD_LINES = (
    "tests/test_{w}.py::test_{i} PASSED                                       [{p:3d}%]",
    "tests/test_{w}.py::test_{w2}_{w} FAILED                                  [{p:3d}%]",
    "src/{w}/{w2}.ts({n},{m}): error TS2345: Argument of type '{W}' is not assignable.",
    "{w}/{w2}.go:{n}:{m}: undefined: {W}{W2}",
    " M src/{w}/{w2}.py",
    "?? docs/{w}-{w2}.md",
    "drwxr-xr-x  4 dev dev  4096 Oct  6 09:{m:02d} {w}",
    "-rw-r--r--  1 dev dev {n:5d} Oct  6 09:{m:02d} {w2}.py",
    "src/{w}/{w2}.py:{n}:    {i}({w})",
    "{n} passed, {m} warnings in {m}.{n:02d}s",
)


def _fill(template: str, rng: random.Random) -> str:
    w, w2 = rng.choice(_WORDS), rng.choice(_WORDS)
    return template.format(
        w=w,
        w2=w2,
        W=w.capitalize(),
        W2=w2.capitalize(),
        i=rng.choice(_IDENTS),
        t=rng.choice(_TYPES),
        n=rng.randrange(1, 900),
        m=rng.randrange(0, 60),
        p=rng.randrange(0, 101),
    )


def _text(rng: random.Random, templates: tuple[str, ...], size: int) -> str:
    lines: list[str] = []
    n = 0
    while n < size:
        line = _fill(rng.choice(templates), rng)
        lines.append(line)
        n += len(line) + 1
    return "\n".join(lines)


def _prose(rng: random.Random, words: int) -> str:
    out = []
    for i in range(words):
        w = rng.choice(_WORDS)
        out.append(w.capitalize() if i % 14 == 0 else w)
        if i % 14 == 13:
            out[-1] += "."
    return " ".join(out) + "."


@dataclass(frozen=True, slots=True)
class FileBody:
    path: str
    content: str
    lines: int


class PayloadPool:
    """A fixed, seeded set of strings; `pick_*` choose among them with the caller's rng."""

    def __init__(self, seed: int, *, files: int = 96, outputs: int = 64) -> None:
        rng = random.Random(seed)
        self.files: list[FileBody] = []
        for k in range(files):
            # Log-uniform 300 B .. 48 KB: most reads are small, a few are whole large modules.
            size = int(300 * (160 ** rng.random()))
            body = _text(rng, _CODE_LINES, size)
            ext = rng.choice(("py", "ts", "go", "py", "tsx", "md"))
            path = f"src/{rng.choice(_WORDS)}/{rng.choice(_WORDS)}_{k}.{ext}"
            self.files.append(FileBody(path, body, body.count("\n") + 1))
        self.outputs = [
            _text(rng, _CMD_LINES, int(120 * (120 ** rng.random()))) for _ in range(outputs)
        ]
        self.prose = [_prose(rng, rng.randrange(8, 220)) for _ in range(48)]
        self.prompts = [_prose(rng, rng.randrange(6, 60)) for _ in range(32)]
        # Opaque blobs: Claude thinking signatures, Codex encrypted reasoning.
        self.blobs = [
            base64.b64encode(rng.randbytes(rng.randrange(300, 4800))).decode() for _ in range(32)
        ]

    def pick_file(self, rng: random.Random) -> FileBody:
        return rng.choice(self.files)

    def pick_output(self, rng: random.Random) -> str:
        return rng.choice(self.outputs)

    def pick_prose(self, rng: random.Random) -> str:
        return rng.choice(self.prose)

    def pick_prompt(self, rng: random.Random) -> str:
        return rng.choice(self.prompts)

    def pick_blob(self, rng: random.Random) -> str:
        return rng.choice(self.blobs)


def approx_tokens(text: str) -> int:
    """Rough token count of text (≈4 characters per token), for growing contexts plausibly."""
    return max(1, len(text) // 4)
