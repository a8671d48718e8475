"""The real Codex CLI and OpenCode binaries for the tests that run them, from the npm registry
(`@openai/codex` ships its native binary in a platform package, `opencode-ai` too).

Pinned versions, installed once into a cache outside the work tree (a fresh clone finds them):
`$FLEETMETER_AGENTS_DIR`, default `~/.cache/fleetmeter/agents-<versions>`. `.ci/run` installs
them (`python -m tests.real_agents install`); a test that needs one skips and names what is
missing when it is not there.
"""

from __future__ import annotations

import json
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
# OpenCode installs its plugin API package into a project's `.opencode/` once it finds a plugin
# there (from the npm registry, ~30 s): kept installed beside the binaries and seeded.
PLUGIN_PACKAGE: Final = f"@opencode-ai/plugin@{OPENCODE_VERSION}"
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


def plugin_deps() -> Path:
    return agents_dir() / "opencode-plugin"


def seed_opencode_dir(directory: Path) -> bool:
    """Give a project's `.opencode/` the plugin API package OpenCode would install there: its
    package.json, lock and node_modules copied (OpenCode replaces a link with an install)."""
    source = plugin_deps()
    if not (source / "node_modules" / "@opencode-ai" / "plugin").exists():
        return False
    directory.mkdir(parents=True, exist_ok=True)
    dependency = {"dependencies": {"@opencode-ai/plugin": OPENCODE_VERSION}}
    (directory / "package.json").write_text(json.dumps(dependency, indent=2) + "\n")
    shutil.copy(source / "package-lock.json", directory / "package-lock.json")
    shutil.copytree(source / "node_modules", directory / "node_modules", symlinks=True)
    return True


def install() -> int:
    npm = shutil.which("npm")
    if npm is None:
        print("no npm on PATH: the real-agent tests will skip", file=sys.stderr)
        return 0
    if not (binary("codex") and binary("opencode")):
        _npm_install(npm, agents_dir(), PACKAGES)
    if not (plugin_deps() / "node_modules" / "@opencode-ai" / "plugin").exists():
        _npm_install(npm, plugin_deps(), (PLUGIN_PACKAGE,))
    print(f"real agents in {agents_dir()}")
    return 0  # the suite still runs; the tests say what is missing


def _npm_install(npm: str, target: Path, packages: tuple[str, ...]) -> None:
    target.mkdir(parents=True, exist_ok=True)
    command = [npm, "install", "--no-audit", "--no-fund", "--prefix", str(target), *packages]
    done = subprocess.run(command, check=False, timeout=900)
    if done.returncode != 0:
        print(f"npm install {' '.join(packages)} failed ({done.returncode}): tests will skip")


if __name__ == "__main__":
    if sys.argv[1:] != ["install"]:
        print("usage: python -m tests.real_agents install", file=sys.stderr)
        sys.exit(2)
    sys.exit(install())
