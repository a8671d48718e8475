"""`node-agent scan` against ccusage and tokscale on the same files: first scans (cold and warm),
repeat scans (the scan index), after appending 10 MB, Codex rollouts, and a 1 GB home.

fleetmeter runs as a user has it: `pip install .` into its own venv under bench/.work (bytecode
compiled, no editable-install finder), its `node-agent` console script. Each run is a fresh
process (no warm interpreter); the tools' runs alternate, so a noisy neighbour on a shared
machine slows them alike. Peak memory is the largest sum of resident sets over the process tree
(fleetmeter may use worker processes), sampled every 5 ms. The page cache is dropped before each
cold run when the kernel lets us; otherwise every run reads from a warm cache, which is said in
the output. The peers are set up by `bench.peers`; the real-shaped homes by `bench.corpora`.

A first scan runs with an empty scan index and no kept answers each time (it writes them, as a
user's first scan does); a repeat scan with the index and answer the previous run left;
"appended" puts 10 MB of new calls across the 10 largest transcripts before each run (taken back
and appended again, same inodes), with the index as it was before them. The peers have no index:
they read everything every time.
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import orjson
import psutil

from bench.corpora import Appends, real_shaped_home
from bench.peers import Tokscale, ccusage, ensure_ccusage, tokscale_totals
from node_agent.scan_answer import FOLDER as ANSWERS
from node_agent.scan_index import INDEX_NAME
from node_agent.scan_journal import JOURNAL_NAME
from node_agent.simulate.fleet import generate_fleet

WORK = Path(__file__).resolve().parent / ".work"
CORPUS_MB = 200
RUNS = 3
NODE_AGENT = WORK / "venv" / "bin" / "node-agent"
CACHE = WORK / "ours-cache"  # the scan index of the measured runs ($XDG_CACHE_HOME)


@dataclass(frozen=True)
class Run:
    seconds: float
    peak_rss_mb: float
    stdout: bytes
    peak_pss_mb: float = 0.0
    spread: tuple[float, ...] = ()  # every timed run's seconds, fastest first
    # CPU seconds (user + system) of the whole process tree: on a machine shared with other
    # jobs the wall time swings with their load, the CPU time much less. Least of the runs.
    cpu: float = 0.0


@dataclass(frozen=True)
class Cmd:
    name: str
    argv: Sequence[str]
    env: dict[str, str] | None = None
    before: Callable[[], None] | None = None  # untimed set-up before each run


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
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
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
    after = resource.getrusage(resource.RUSAGE_CHILDREN)  # workers included: reaped by it
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    reader.join()
    if proc.returncode not in (0, 1):
        raise RuntimeError(f"{cmd[0]} exited {proc.returncode}")
    rss, pss_mb = (0.0, peak / 1e6) if pss else (peak / 1e6, 0.0)
    return Run(seconds, rss, b"".join(chunks), pss_mb, cpu=cpu)


def size_of(paths: Sequence[Path]) -> int:
    return sum(f.stat().st_size for p in paths for f in p.rglob("*") if f.is_file())


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


def best(cmds: Sequence[Cmd], cold: bool) -> list[Run]:
    """For each command, the fastest of RUNS timed runs (the commands take turns); memory from
    those (RSS) and from one more run each (PSS)."""
    runs: list[list[Run]] = [[] for _ in cmds]

    def once(cmd: Cmd, pss: bool = False) -> Run:
        if cmd.before is not None:
            cmd.before()
        if cold:
            drop_page_cache()
        return measure(cmd.argv, cmd.env, pss=pss)

    for _ in range(RUNS):
        for cmd, mine in zip(cmds, runs, strict=True):
            mine.append(once(cmd))
    out = []
    for cmd, mine in zip(cmds, runs, strict=True):
        pss = once(cmd, pss=True).peak_pss_mb
        fastest = min(mine, key=lambda r: r.seconds)
        spread = tuple(sorted(r.seconds for r in mine))
        rss = max(r.peak_rss_mb for r in mine)
        cpu = min(r.cpu for r in mine)
        out.append(Run(fastest.seconds, rss, fastest.stdout, pss, spread, cpu))
    return out


def _wipe_cache() -> None:
    """An empty scan index and no kept answers: a first scan of these logs. The parsed price
    tables beside them stay (made once after an install, by whichever command prices first:
    ~50 ms of TOML)."""
    (CACHE / "fleetmeter" / INDEX_NAME).unlink(missing_ok=True)
    (CACHE / "fleetmeter" / JOURNAL_NAME).unlink(missing_ok=True)
    shutil.rmtree(CACHE / "fleetmeter" / ANSWERS, ignore_errors=True)


def ours(
    paths: Sequence[Path],
    name: str = "fleetmeter scan",
    jobs: int | None = None,
    before: Callable[[], None] | None = _wipe_cache,
) -> Cmd:
    """`before`: by default an empty scan index each run (a first scan)."""
    cmd = [str(NODE_AGENT), "scan", "--json", "--by", "day"]
    if jobs is not None:
        cmd += ["--jobs", str(jobs)]
    env = dict(os.environ, XDG_CACHE_HOME=str(CACHE))
    return Cmd(name, cmd + [str(p) for p in paths], env, before)


def line(name: str, run: Run, size: int, speed_of: Run | None = None) -> str:
    speed = f"{speed_of.seconds / run.seconds:6.2f}x" if speed_of is not None else " " * 7
    runs = "/".join(f"{s:.2f}" for s in run.spread)
    return (
        f"  {name:<36} {run.seconds:6.2f} s  {size / 1e6 / run.seconds:7.1f} MB/s  {speed}"
        f"  peak RSS {run.peak_rss_mb:6.1f} MB, PSS {run.peak_pss_mb:6.1f} MB  (runs {runs} s)"
        f"  CPU {run.cpu:.2f} s"
    )


class Peers:
    def __init__(self) -> None:
        self.ccusage = ensure_ccusage()
        self.tokscale = Tokscale.ensure()

    def claude(self, homes: Sequence[Path], name: str) -> list[Cmd]:
        cmds = []
        if self.ccusage is not None:
            argv, env = ccusage(self.ccusage, "claude", homes)
            cmds.append(Cmd("ccusage 20.0.24 --offline", argv, env))
        if self.tokscale is not None:
            argv, env = self.tokscale.claude(homes, name)
            cmds.append(Cmd("tokscale 1.4.3 (bun)", argv, env))
        return cmds

    def codex(self, homes: Sequence[Path]) -> list[Cmd]:
        if self.ccusage is None:
            return []
        argv, env = ccusage(self.ccusage, "codex", homes)
        return [Cmd("ccusage 20.0.24 --offline", argv, env)]


def compare(title: str, mine: Sequence[Cmd], theirs: Sequence[Cmd], size: int, cold: bool) -> None:
    """One table: every command's best run, and fleetmeter's speed against the first peer's."""
    print(f"\n{title} ({'cold' if cold else 'warm'}): {size / 1e6:.1f} MB")
    runs = best([*mine, *theirs], cold)
    peer = runs[len(mine)] if theirs else None
    for cmd, run in zip([*mine, *theirs], runs, strict=True):
        print(line(cmd.name, run, size, peer if cmd in mine else None))
    for cmd, run in zip(theirs, runs[len(mine) :], strict=True):
        print(f"    {cmd.name}: {_totals(cmd, run)}")
    if mine:
        total = orjson.loads(runs[0].stdout)["total"]
        print(
            f"    fleetmeter: {total['calls']} calls, output {total['tokens']['output']},"
            f" ${total['cost']['api_equivalent']} API-equivalent"
        )


def _totals(cmd: Cmd, run: Run) -> str:
    if cmd.name.startswith("tokscale"):
        messages, output, cost = tokscale_totals(run.stdout)
        return f"{messages} messages, output {output}, ${cost:.2f}"
    data = orjson.loads(run.stdout)
    totals = data.get("totals", {}) if isinstance(data, dict) else {}
    return f"output {totals.get('outputTokens')}, ${totals.get('totalCost', totals.get('costUSD'))}"


def claude_figures(homes: Sequence[Path], name: str, peers: Peers, cold: bool) -> None:
    """First scan, repeat scan and after appending 10 MB, against the peers."""
    size = size_of(homes)
    theirs = peers.claude(homes, name)
    first = [ours(homes, "fleetmeter first scan (2 workers)")]
    compare(f"{name}: first scan", first, theirs, size, cold)
    repeat = ours(homes, "fleetmeter repeat scan (index)", before=None)
    subprocess.run(repeat.argv, env=repeat.env, capture_output=True, check=False)  # the index
    compare(f"{name}: repeat scan, nothing changed", [repeat], theirs, size, cold)
    appends = Appends(homes)
    saved = WORK / "ours-cache-saved"
    shutil.rmtree(saved, ignore_errors=True)
    shutil.copytree(CACHE, saved)

    def appended() -> None:
        shutil.rmtree(CACHE, ignore_errors=True)
        shutil.copytree(saved, CACHE)
        appends.apply()

    grown = ours(homes, "fleetmeter repeat scan (index)", before=appended)
    title = (
        f"{name}: after appending {appends.bytes / 1e6:.1f} MB across {len(appends.sizes)} files"
    )
    try:
        compare(title, [grown], theirs, size + appends.bytes, cold)
    finally:
        appends.undo()


SECTIONS = ("fleet", "real", "generated", "codex", "startup", "big")


def main() -> None:
    """`python -m bench.scan [--runs N] [SECTION ...]`: all sections by default."""
    global RUNS
    args = sys.argv[1:]
    if args[:1] == ["--runs"]:
        RUNS, args = int(args[1]), args[2:]
    unknown = sorted(set(args) - set(SECTIONS))
    if unknown:
        sys.exit(f"bench.scan: unknown section(s) {', '.join(unknown)}; known: {SECTIONS}")
    wanted = set(args or SECTIONS)
    corpus = ensure_corpus()
    install_package()
    peers = Peers()
    machines = sorted(p for p in corpus.iterdir() if p.is_dir())
    cold = drop_page_cache()
    print(f"page cache {'dropped before each cold run' if cold else 'NOT dropped (no permission)'}")
    print(
        f"best of {RUNS} fresh processes each, the tools taking turns; speed: the first peer's"
        " time over fleetmeter's; peak = max summed RSS of the process tree in those runs, and"
        " max summed PSS in one more run (shared pages of forked workers once); CPU: the least"
        " user + system time of the process tree in those runs"
    )

    if "fleet" in wanted:
        total_size = size_of(machines)
        compare("generated fleet, all five agents", [ours(machines)], [], total_size, cold)

    claude = sorted(h for m in machines for h in m.iterdir() if h.name.startswith("claude"))
    for warm_too in (False, True):
        temperature = cold and not warm_too
        if "real" in wanted:
            claude_figures([real_shaped_home(200)], "real-shaped Claude home", peers, temperature)
        if "generated" in wanted:
            claude_figures(claude, "generated Claude homes", peers, temperature)
        if not cold:
            break

    if "codex" in wanted:
        codex = sorted(h for m in machines for h in m.iterdir() if h.name.startswith("codex"))
        plain = plain_codex_mirror(codex)
        compare(
            "Codex homes, plain .jsonl rollouts only (the files ccusage reads)",
            [ours(plain, "fleetmeter first scan")],
            peers.codex(plain),
            size_of(plain),
            cold,
        )
    if "startup" in wanted:
        empty = WORK / "empty"
        empty.mkdir(exist_ok=True)
        (startup,) = best([ours([empty], "start-up: scan of an empty folder")], False)
        runs = "/".join(f"{s:.3f}" for s in startup.spread)
        print(
            f"\n  fleetmeter start-up (scan of an empty folder, warm): {runs} s,"
            f" CPU {startup.cpu:.3f} s (least of the runs)"
        )

    if "big" in wanted:
        big = [real_shaped_home(1000)]
        for temperature in (cold, False) if cold else (False,):
            claude_figures(big, "1 GB real-shaped Claude home", peers, temperature)


if __name__ == "__main__":
    main()
