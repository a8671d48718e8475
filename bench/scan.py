"""Cold `node-agent scan` of a generated corpus (at least 200 MB) against ccusage, same files.

Each run is a fresh process (no warm interpreter). Peak memory is the largest sum of resident
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

import orjson
import psutil

from node_agent.simulate.fleet import generate_fleet

WORK = Path(__file__).resolve().parent / ".work"
CORPUS_MB = 200
CCUSAGE_VERSION = "20.0.24"  # 20.0.26's platform packages were never published
RUNS = 3


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


def best(cmd: Sequence[str], env: dict[str, str] | None, cold: bool) -> Run:
    """The fastest of RUNS timed runs; memory from those (RSS) and from one more run (PSS)."""
    runs = []
    for _ in range(RUNS):
        if cold:
            drop_page_cache()
        runs.append(measure(cmd, env))
    if cold:
        drop_page_cache()
    pss = measure(cmd, env, pss=True).peak_pss_mb
    fastest = min(runs, key=lambda r: r.seconds)
    return Run(fastest.seconds, max(r.peak_rss_mb for r in runs), fastest.stdout, pss)


def size_of(paths: Sequence[Path]) -> int:
    return sum(f.stat().st_size for p in paths for f in p.rglob("*") if f.is_file())


def ours(
    paths: Sequence[Path], cold: bool, jobs: int | None = None
) -> tuple[Run, dict[str, object]]:
    cmd = [sys.executable, "-m", "node_agent.cli", "scan", "--json", "--by", "day"]
    if jobs is not None:
        cmd += ["--jobs", str(jobs)]
    cmd += map(str, paths)
    run = best(cmd, None, cold)
    return run, orjson.loads(run.stdout)


def theirs(binary: Path, agent: str, homes: Sequence[Path], cold: bool) -> tuple[Run, object]:
    var = {"claude": "CLAUDE_CONFIG_DIR", "codex": "CODEX_HOME"}[agent]
    env = dict(os.environ, **{var: ",".join(map(str, homes)), "NO_COLOR": "1"})
    run = best([str(binary), agent, "daily", "--offline", "--json"], env, cold)
    return run, orjson.loads(run.stdout).get("totals")


def line(name: str, run: Run, size: int, calls: int | None) -> str:
    rate = f"{calls / run.seconds:>9,.0f} events/s" if calls is not None else " " * 19
    return (
        f"  {name:<28} {run.seconds:6.2f} s  {size / 1e6 / run.seconds:7.1f} MB/s  {rate}"
        f"  peak RSS {run.peak_rss_mb:6.1f} MB, PSS {run.peak_pss_mb:6.1f} MB"
    )


def compile_bytecode() -> None:
    """An installed package has its bytecode compiled (pip does it); a checkout run with
    PYTHONDONTWRITEBYTECODE would compile every module on every start, a cost no user pays."""
    root = Path(__file__).resolve().parent.parent
    packages = [str(root / name) for name in ("shared", "pricing", "node_agent")]
    subprocess.run([sys.executable, "-m", "compileall", "-q", *packages], check=True)


def main() -> None:
    corpus = ensure_corpus()
    compile_bytecode()
    machines = sorted(p for p in corpus.iterdir() if p.is_dir())
    cold = drop_page_cache()
    print(
        f"page cache {'dropped before each run' if cold else 'NOT dropped (no permission): warm'}"
    )
    print(
        f"best of {RUNS} fresh processes each; peak = max summed RSS of the process tree in"
        " those runs, and max summed PSS in one more run (shared pages of forked workers once)\n"
    )

    total_size = size_of(machines)
    run, report = ours(machines, cold)
    calls = report["total"]["calls"]  # type: ignore[index]
    print(f"full corpus, all five agents: {total_size / 1e6:.1f} MB in {report['files']} files")
    print(line("fleetmeter node-agent scan", run, total_size, calls))

    binary = ensure_ccusage()
    both: list[Path] = []
    theirs_total = 0.0
    theirs_peak = 0.0
    for agent, home in (("claude", "claude"), ("codex", "codex")):
        homes = sorted(h for m in machines for h in m.iterdir() if h.name.startswith(home))
        both += homes
        size = size_of(homes)
        print(f"\n{agent} homes only: {size / 1e6:.1f} MB in {len(homes)} homes")
        one_run, _ = ours(homes, cold, jobs=1)
        our_run, our_report = ours(homes, cold)
        our_calls = our_report["total"]["calls"]  # type: ignore[index]
        print(line("fleetmeter scan --jobs 1", one_run, size, our_calls))
        print(line("fleetmeter scan (2 workers)", our_run, size, our_calls))
        if binary is None:
            continue
        their_run, totals = theirs(binary, agent, homes, cold)
        theirs_total += their_run.seconds
        theirs_peak = max(theirs_peak, their_run.peak_pss_mb)
        print(line(f"ccusage {CCUSAGE_VERSION} --offline", their_run, size, None))
        speed = their_run.seconds / our_run.seconds
        memory = our_run.peak_pss_mb / their_run.peak_pss_mb
        print(
            f"  -> fleetmeter is {speed:.2f}x ccusage's speed, uses {memory:.2f}x its memory (PSS)"
        )
        speed1 = their_run.seconds / one_run.seconds
        memory1 = one_run.peak_pss_mb / their_run.peak_pss_mb
        print(f"     (--jobs 1: {speed1:.2f}x its speed, {memory1:.2f}x its memory)")
        our_cost = our_report["total"]["cost"]["api_equivalent"]  # type: ignore[index]
        their_cost = (
            totals.get("totalCost", totals.get("costUSD")) if isinstance(totals, dict) else None
        )
        print(f"  API-equivalent total: fleetmeter ${our_cost}, ccusage ${their_cost}")

    if binary is not None:
        # ccusage reads each agent with its own command; one fleetmeter scan reads both.
        size = size_of(both)
        print(f"\nclaude + codex homes (every file ccusage reads): {size / 1e6:.1f} MB")
        our_run, _ = ours(both, cold)
        print(line("fleetmeter scan (2 workers)", our_run, size, None))
        print(
            f"  ccusage claude + ccusage codex    {theirs_total:6.2f} s  "
            f"{size / 1e6 / theirs_total:7.1f} MB/s  {'':19}  peak PSS {theirs_peak:6.1f} MB"
        )
        print(f"  -> fleetmeter is {theirs_total / our_run.seconds:.2f}x ccusage's speed")


if __name__ == "__main__":
    main()
