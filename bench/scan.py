"""Cold `node-agent scan` of a generated corpus (at least 200 MB) against ccusage, same files.

fleetmeter runs as a user has it: `pip install .` into its own venv under bench/.work (bytecode
compiled, no editable-install finder), its `node-agent` console script. Each run is a fresh
process (no warm interpreter); the two tools' runs alternate, so a noisy neighbour on a shared
machine slows both alike. Peak memory is the largest sum of resident
sets over the process tree (fleetmeter may use worker processes), sampled every 5 ms. The page
cache is dropped before each run when the kernel lets us; otherwise both tools read from a warm
cache, which is said in the output. ccusage is the native binary of its npm package, run with
`--offline`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import psutil

from node_agent.simulate.fleet import generate_fleet

WORK = Path(__file__).resolve().parent / ".work"
CORPUS_MB = 200
CCUSAGE_VERSION = "20.0.24"  # 20.0.26's platform packages were never published
RUNS = 3
NODE_AGENT = WORK / "venv" / "bin" / "node-agent"


@dataclass(frozen=True)
class Run:
    seconds: float
    peak_rss_mb: float
    stdout: bytes
    peak_pss_mb: float = 0.0


def ensure_corpus(mb: int = CORPUS_MB, seed: int = 2026) -> Path:
    root = WORK / f"corpus-{seed}-{mb}mb"
    if (root / "truth.json").exists():
        return root
    if root.exists():
        shutil.rmtree(root)
    print(f"generating a {mb} MB corpus in {root} ...", flush=True)
    began = time.perf_counter()
    generate_fleet(root, seed=seed, machines=4, target_bytes=mb * 1_000_000)
    print(f"  generated in {time.perf_counter() - began:.1f} s", flush=True)
    return root


def ensure_ccusage() -> Path | None:
    binary = WORK / "npm/node_modules/@ccusage/ccusage-linux-x64/bin/ccusage"
    if not binary.exists():
        if shutil.which("npm") is None:
            print("npm not found: ccusage comparison skipped")
            return None
        print(f"installing ccusage@{CCUSAGE_VERSION} from the npm registry ...", flush=True)
        proc = subprocess.run(
            [
                "npm",
                "install",
                "--no-audit",
                "--no-fund",
                "--prefix",
                str(WORK / "npm"),
                f"ccusage@{CCUSAGE_VERSION}",
            ],
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0 or not binary.exists():
            print(f"ccusage install failed: {proc.stderr.strip()[-400:]}")
            return None
    binary.chmod(0o755)
    return binary


def drop_page_cache() -> bool:
    try:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError:
        return False
    return True


def measure(cmd: Sequence[str], env: dict[str, str] | None = None, pss: bool = False) -> Run:
    """Wall time, and peak memory as the largest sum over the process and all its children
    (workers included), sampled every 5 ms: of RSS, or with `pss` of PSS, which counts a page
    shared by forked workers once rather than once per process (slower to read: /proc smaps)."""
    began = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
    chunks: list[bytes] = []
    reader = threading.Thread(target=lambda: chunks.append(proc.stdout.read()))  # type: ignore[union-attr]
    reader.start()
    tree = psutil.Process(proc.pid)
    peak = 0
    while proc.poll() is None:
        try:
            members = [tree, *tree.children(recursive=True)]
            if pss:
                peak = max(peak, sum(m.memory_full_info().pss for m in members))
            else:
                peak = max(peak, sum(m.memory_info().rss for m in members))
        except psutil.Error:
            pass
        time.sleep(0.005)
    seconds = time.perf_counter() - began
    reader.join()
    if proc.returncode not in (0, 1):
        raise RuntimeError(f"{cmd[0]} exited {proc.returncode}")
    rss, pss_mb = (0.0, peak / 1e6) if pss else (peak / 1e6, 0.0)
    return Run(seconds, rss, b"".join(chunks), pss_mb)


Cmd = tuple[Sequence[str], dict[str, str] | None]


def best(cmds: Sequence[Cmd], cold: bool) -> list[Run]:
    """For each command, the fastest of RUNS timed runs (the commands take turns); memory from
    those (RSS) and from one more run each (PSS)."""
    runs: list[list[Run]] = [[] for _ in cmds]
    for _ in range(RUNS):
        for (cmd, env), mine in zip(cmds, runs, strict=True):
            if cold:
                drop_page_cache()
            mine.append(measure(cmd, env))
    out = []
    for (cmd, env), mine in zip(cmds, runs, strict=True):
        if cold:
            drop_page_cache()
        pss = measure(cmd, env, pss=True).peak_pss_mb
        fastest = min(mine, key=lambda r: r.seconds)
        out.append(Run(fastest.seconds, max(r.peak_rss_mb for r in mine), fastest.stdout, pss))
    return out


def size_of(paths: Sequence[Path]) -> int:
    return sum(f.stat().st_size for p in paths for f in p.rglob("*") if f.is_file())


def ours(paths: Sequence[Path], jobs: int | None = None) -> Cmd:
    cmd = [str(NODE_AGENT), "scan", "--json", "--by", "day"]
    if jobs is not None:
        cmd += ["--jobs", str(jobs)]
    return cmd + [str(p) for p in paths], None


def theirs(binary: Path, agent: str, homes: Sequence[Path]) -> Cmd:
    var = {"claude": "CLAUDE_CONFIG_DIR", "codex": "CODEX_HOME"}[agent]
    env = dict(os.environ, **{var: ",".join(map(str, homes)), "NO_COLOR": "1"})
    return [str(binary), agent, "daily", "--offline", "--json"], env


def report_of(run: Run) -> dict[str, Any]:
    data: dict[str, Any] = orjson.loads(run.stdout)
    return data


def totals_of(run: Run) -> object:
    data = orjson.loads(run.stdout)
    return data.get("totals") if isinstance(data, dict) else None


def line(name: str, run: Run, size: int, calls: int | None) -> str:
    rate = f"{calls / run.seconds:>9,.0f} events/s" if calls is not None else " " * 19
    return (
        f"  {name:<28} {run.seconds:6.2f} s  {size / 1e6 / run.seconds:7.1f} MB/s  {rate}"
        f"  peak RSS {run.peak_rss_mb:6.1f} MB, PSS {run.peak_pss_mb:6.1f} MB"
    )


def install_package() -> None:
    """fleetmeter from this checkout, installed as a user installs it (not editable)."""
    root = Path(__file__).resolve().parent.parent
    venv = WORK / "venv"
    fresh = not (venv / "bin" / "python").exists()
    if fresh:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    print("installing this checkout into bench/.work/venv ...", flush=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    extra = [] if fresh else ["--no-deps", "--force-reinstall"]
    done = subprocess.run([*pip, *extra, str(root)], cwd=WORK, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"pip install failed: {done.stderr.strip()[-2000:]}")


def plain_codex_mirror(homes: Sequence[Path]) -> list[Path]:
    """The Codex homes with only their plain `.jsonl` rollouts (hard links): what ccusage reads.
    It skips compressed `.jsonl.zst` rollouts, which Codex writes for idle sessions."""
    out = []
    for home in homes:
        mirror = WORK / "codex-plain" / home.parent.name / home.name
        if mirror.exists():
            shutil.rmtree(mirror)
        for file in home.rglob("*.jsonl"):
            target = mirror / file.relative_to(home)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.link(file, target)
        out.append(mirror)
    return out


def compare(
    name: str, homes: Sequence[Path], agent: str, binary: Path | None, cold: bool
) -> Run | None:
    """Print one comparison; returns ccusage's run (None without ccusage)."""
    size = size_of(homes)
    print(f"\n{name}: {size / 1e6:.1f} MB in {len(homes)} homes")
    cmds = [ours(homes, jobs=1), ours(homes)]
    if binary is not None:
        cmds.append(theirs(binary, agent, homes))
    runs = best(cmds, cold)
    one_run, our_run = runs[0], runs[1]
    our_report = report_of(our_run)
    our_calls = our_report["total"]["calls"]
    print(line("fleetmeter scan --jobs 1", one_run, size, our_calls))
    print(line("fleetmeter scan (2 workers)", our_run, size, our_calls))
    if binary is None:
        return None
    their_run = runs[2]
    print(line(f"ccusage {CCUSAGE_VERSION} --offline", their_run, size, None))
    speed = their_run.seconds / our_run.seconds
    memory = our_run.peak_pss_mb / their_run.peak_pss_mb
    print(f"  -> fleetmeter is {speed:.2f}x ccusage's speed, uses {memory:.2f}x its memory (PSS)")
    speed1 = their_run.seconds / one_run.seconds
    memory1 = one_run.peak_pss_mb / their_run.peak_pss_mb
    print(f"     (--jobs 1: {speed1:.2f}x its speed, {memory1:.2f}x its memory)")
    totals = totals_of(their_run)
    their_cost = (
        totals.get("totalCost", totals.get("costUSD")) if isinstance(totals, dict) else None
    )
    print(
        f"  API-equivalent total: fleetmeter ${our_report['total']['cost']['api_equivalent']},"
        f" ccusage ${their_cost}"
    )
    return their_run


def main() -> None:
    corpus = ensure_corpus()
    install_package()
    machines = sorted(p for p in corpus.iterdir() if p.is_dir())
    cold = drop_page_cache()
    print(
        f"page cache {'dropped before each run' if cold else 'NOT dropped (no permission): warm'}"
    )
    print(
        f"best of {RUNS} fresh processes each, the tools taking turns; peak = max summed RSS of"
        " the process tree in those runs, and max summed PSS in one more run (shared pages of"
        " forked workers once)\n"
    )

    total_size = size_of(machines)
    (run,) = best([ours(machines)], cold)
    report = report_of(run)
    print(f"full corpus, all five agents: {total_size / 1e6:.1f} MB in {report['files']} files")
    print(line("fleetmeter node-agent scan", run, total_size, report["total"]["calls"]))

    binary = ensure_ccusage()
    claude = sorted(h for m in machines for h in m.iterdir() if h.name.startswith("claude"))
    codex = sorted(h for m in machines for h in m.iterdir() if h.name.startswith("codex"))
    their_claude = compare("claude homes only", claude, "claude", binary, cold)
    compare("codex homes (ccusage skips their .jsonl.zst rollouts)", codex, "codex", binary, cold)
    plain = plain_codex_mirror(codex)
    their_codex = compare(
        "codex homes, plain .jsonl rollouts only (the files ccusage reads)",
        plain,
        "codex",
        binary,
        cold,
    )

    if their_claude is not None and their_codex is not None:
        theirs_total = their_claude.seconds + their_codex.seconds
        theirs_peak = max(their_claude.peak_pss_mb, their_codex.peak_pss_mb)
        # ccusage reads each agent with its own command; one fleetmeter scan reads both.
        both = [*claude, *plain]
        size = size_of(both)
        print(f"\nclaude + plain codex homes (every file ccusage reads): {size / 1e6:.1f} MB")
        (our_run,) = best([ours(both)], cold)
        print(line("fleetmeter scan (2 workers)", our_run, size, None))
        print(
            f"  ccusage claude + ccusage codex    {theirs_total:6.2f} s  "
            f"{size / 1e6 / theirs_total:7.1f} MB/s  {'':19}  peak PSS {theirs_peak:6.1f} MB"
        )
        print(f"  -> fleetmeter is {theirs_total / our_run.seconds:.2f}x ccusage's speed")


if __name__ == "__main__":
    main()
