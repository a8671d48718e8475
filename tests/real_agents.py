"""The real Codex CLI and OpenCode binaries for the tests that run them, from the npm registry
(`@openai/codex` ships its native binary in a platform package, `opencode-ai` too).

Pinned versions, installed once into a cache outside the work tree (a fresh clone finds them):
`$FLEETMETER_AGENTS_DIR`, default `~/.cache/fleetmeter/agents-<versions>`. `.ci/run` installs
them (`python -m tests.real_agents install`); a test that needs one skips and names what is
missing when it is not there.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Final

import pytest

CODEX_VERSION: Final = "0.171.0"
OPENCODE_VERSION: Final = "1.18.33"
PACKAGES: Final = (f"@openai/codex@{CODEX_VERSION}", f"opencode-ai@{OPENCODE_VERSION}")
INSTALL_HINT: Final = "python -m tests.real_agents install (npm, from the npm registry)"


def agents_dir() -> Path:
    given = os.environ.get("FLEETMETER_AGENTS_DIR")
    if given:
        return Path(given)
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "fleetmeter" / f"agents-codex-{CODEX_VERSION}-opencode-{OPENCODE_VERSION}"


def binary(name: str) -> Path | None:
    path = agents_dir() / "node_modules" / ".bin" / name
    return path if path.exists() and os.access(path, os.X_OK) else None


def need(name: str, package: str) -> Path:
    """The binary, or the test skipped naming what is missing."""
    found = binary(name)
    if found is None:
        pytest.skip(f"{package} is not installed in {agents_dir()}: {INSTALL_HINT}")
    if shutil.which("node") is None:
        pytest.skip(f"{package} needs `node` on PATH (its launcher is a node script)")
    return found


def codex() -> Path:
    return need("codex", f"@openai/codex@{CODEX_VERSION}")


def opencode() -> Path:
    return need("opencode", f"opencode-ai@{OPENCODE_VERSION}")


def install() -> int:
    npm = shutil.which("npm")
    if npm is None:
        print("no npm on PATH: the real-agent tests will skip", file=sys.stderr)
        return 0
    if binary("codex") and binary("opencode"):
        print(f"real agents already in {agents_dir()}")
        return 0
    target = agents_dir()
    target.mkdir(parents=True, exist_ok=True)
    command = [npm, "install", "--no-audit", "--no-fund", "--prefix", str(target), *PACKAGES]
    done = subprocess.run(command, check=False, timeout=900)
    if done.returncode != 0:
        print(f"npm install failed ({done.returncode}): the real-agent tests will skip")
    return 0  # the suite still runs; the tests say what is missing


if __name__ == "__main__":
    if sys.argv[1:] != ["install"]:
        print("usage: python -m tests.real_agents install", file=sys.stderr)
        sys.exit(2)
    sys.exit(install())
