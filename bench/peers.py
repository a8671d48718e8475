"""The tools `bench.scan` measures fleetmeter against, installed under bench/.work on first use.

- ccusage 20.0.24: the native binary of its npm package, run with `--offline`.
- tokscale 1.4.3: a Rust core started by bun (both from npm). It prices from LiteLLM's price
  file, which it downloads; offline, that file is written into its cache from the copy that
  ships in the `litellm` wheel on PyPI (`pip download`), with an empty OpenRouter file beside
  it. tokscale reads `~/.claude/projects`, so it runs with HOME at a folder whose
  `.claude/projects` holds hard links to the homes' transcripts.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from collections.abc import Sequence
from pathlib import Path

WORK = Path(__file__).resolve().parent / ".work"
CCUSAGE_VERSION = "20.0.24"  # 20.0.26's platform packages were never published
TOKSCALE_VERSION = "1.4.3"
LITELLM_PRICES = "litellm/model_prices_and_context_window_backup.json"

Command = tuple[list[str], dict[str, str]]


def _npm_install(prefix: Path, packages: Sequence[str]) -> str | None:
    """None when installed, else why not."""
    if shutil.which("npm") is None:
        return "npm not found"
    print(f"installing {' '.join(packages)} from the npm registry ...", flush=True)
    proc = subprocess.run(
        ["npm", "install", "--no-audit", "--no-fund", "--prefix", str(prefix), *packages],
        capture_output=True,
        text=True,
    )
    return None if proc.returncode == 0 else proc.stderr.strip()[-400:]


def ensure_ccusage() -> Path | None:
    binary = WORK / "npm/node_modules/@ccusage/ccusage-linux-x64/bin/ccusage"
    if not binary.exists():
        why = _npm_install(WORK / "npm", [f"ccusage@{CCUSAGE_VERSION}"])
        if why is not None or not binary.exists():
            print(f"ccusage comparison skipped: {why or 'no binary after install'}")
            return None
    binary.chmod(0o755)
    return binary


def ccusage(binary: Path, agent: str, homes: Sequence[Path]) -> Command:
    var = {"claude": "CLAUDE_CONFIG_DIR", "codex": "CODEX_HOME"}[agent]
    env = dict(os.environ, **{var: ",".join(map(str, homes)), "NO_COLOR": "1"})
    return [str(binary), agent, "daily", "--offline", "--json"], env


class Tokscale:
    def __init__(self, bun: Path, script: Path) -> None:
        self.bun = bun
        self.script = script

    @classmethod
    def ensure(cls) -> Tokscale | None:
        prefix = WORK / "tokscale"
        bun = prefix / "node_modules/bun/bin/bun.exe"
        script = prefix / "node_modules/tokscale/bin.js"
        if not (bun.exists() and script.exists()):
            why = _npm_install(prefix, [f"tokscale@{TOKSCALE_VERSION}", "bun"])
            if why is not None or not (bun.exists() and script.exists()):
                print(f"tokscale comparison skipped: {why or 'no bun or tokscale after install'}")
                return None
        if _litellm_prices() is None:
            print("tokscale comparison skipped: no LiteLLM price file (pip download litellm)")
            return None
        return cls(bun, script)

    def claude(self, homes: Sequence[Path], name: str) -> Command:
        """tokscale over the transcripts of `homes`, with its price cache written offline."""
        home = WORK / "tokscale-homes" / name
        if home.exists():
            shutil.rmtree(home)
        projects = home / ".claude" / "projects"
        for index, source in enumerate(homes):
            for file in (source / "projects").rglob("*.jsonl"):
                rel = file.relative_to(source / "projects")
                target = projects / f"h{index}-{rel.parts[0]}" / Path(*rel.parts[1:])
                target.parent.mkdir(parents=True, exist_ok=True)
                os.link(file, target)
        cache = home / ".cache" / "tokscale"
        cache.mkdir(parents=True)
        prices = _litellm_prices()
        assert prices is not None
        now = int(time.time())
        (cache / "pricing-litellm.json").write_text(
            f'{{"timestamp": {now}, "data": {prices.read_text()}}}'
        )
        (cache / "pricing-openrouter.json").write_text(json.dumps({"timestamp": now, "data": {}}))
        env = dict(os.environ, HOME=str(home), XDG_CACHE_HOME=str(home / ".cache"), NO_COLOR="1")
        argv = [str(self.bun), str(self.script), "models", "--json", "--claude", "--no-spinner"]
        return argv, env


def _litellm_prices() -> Path | None:
    target = WORK / "litellm-prices.json"
    if target.exists():
        return target
    wheels = WORK / "litellm-wheel"
    if not list(wheels.glob("litellm-*.whl")):
        print("downloading the litellm wheel for its price file ...", flush=True)
        proc = subprocess.run(
            [sys.executable, "-m", "pip", "download", "litellm", "--no-deps", "-d", str(wheels)],
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            return None
    for wheel in wheels.glob("litellm-*.whl"):
        with zipfile.ZipFile(wheel) as archive:
            target.write_bytes(archive.read(LITELLM_PRICES))
        return target
    return None


def tokscale_totals(stdout: bytes) -> tuple[int, int, float]:
    """(messages, output tokens, cost) of a `tokscale models --json` report."""
    data = json.loads(stdout)
    entries = data.get("entries", []) if isinstance(data, dict) else []
    return (
        sum(int(e.get("messageCount", 0)) for e in entries),
        sum(int(e.get("output", 0)) for e in entries),
        sum(float(e.get("cost", 0.0)) for e in entries),
    )
