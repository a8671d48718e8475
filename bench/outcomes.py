"""What cost per outcome adds: `node-agent scan --by commit` against `--by day` on the same
Claude Code logs, whose sessions work in real git repositories with a long history; and the
hub's `--by commit` report against `--by day` on a store holding the same calls.

`python -m bench.outcomes [--sessions N] [--calls N] [--history N]`: N sessions of N calls
each, spread over 4 repositories (each with N commits of history before the sessions and one
agent commit every 10 calls during them), each timed as a fresh process, best of 3; then the
hub's part (`hub_main`, also `make bench`'s "outcomes"): a month of 1,000,000 calls in two
shapes (`HUB_SHAPES`), every outcome view beside `--by day`, wall and CPU time (the machine
is shared: CPU time is the steadier figure).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from tests.outcome_fixtures import CLAUDE_TRAILER, claude_call, write_session

WORK = Path(__file__).resolve().parent / ".work" / "outcomes"
RUNS = 3
REPOS = 4
START = time.time() - 30 * 86400


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if "GITHUB" not in k}
    env.update(GIT_CONFIG_GLOBAL="/dev/null", GIT_CONFIG_NOSYSTEM="1")
    return env


def _history(repo: Path, commits: list[tuple[float, str, bool]]) -> None:
    """Commits (author time, subject, by the agent) written with one `git fast-import`."""
    lines = []
    for n, (when, subject, agent) in enumerate(commits):
        message = subject + (f"\n\n{CLAUDE_TRAILER}\n" if agent else "\n")
        blob = f"{subject}\n"
        lines += [
            "commit refs/heads/main",
            f"committer Dev <dev@example.com> {int(when)} +0000",
            f"data {len(message.encode())}",
            message,
            f"M 644 inline file{n % 50}.txt",
            f"data {len(blob.encode())}",
            blob,
        ]
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True, env=_env())
    subprocess.run(
        ["git", "fast-import", "--quiet"],
        cwd=repo,
        input="\n".join(lines).encode() + b"\n",
        check=True,
        env=_env(),
        capture_output=True,
    )
    subprocess.run(["git", "checkout", "-q", "main"], cwd=repo, check=True, env=_env())
    subprocess.run(
        ["git", "remote", "add", "origin", f"git@github.com:acme/{repo.name}.git"],
        cwd=repo,
        check=True,
        env=_env(),
    )


def build(sessions: int, calls: int, history: int) -> Path:
    root = WORK / f"s{sessions}-c{calls}-h{history}"
    if (root / "done").exists():
        return root
    shutil.rmtree(root, ignore_errors=True)
    home = root / "claude"
    plans: dict[int, list[tuple[float, str, bool]]] = {
        r: [(START - 86400 - (history - i) * 60, f"old {i}", False) for i in range(history)]
        for r in range(REPOS)
    }
    for s in range(sessions):
        repo = root / f"repo{s % REPOS}"
        begin = START + s * 3600
        lines = []
        for n in range(calls):
            at = begin + n * 30
            lines.append(claude_call(f"s{s}", repo, "main", at, n))
            if n % 10 == 9:
                plans[s % REPOS].append((at + 5, f"s{s} step {n}", True))
        write_session(home, f"s{s}", lines)
    for r, commits in plans.items():
        _history(root / f"repo{r}", sorted(commits))
    (root / "done").write_text("")
    return root


def best(args: Sequence[str]) -> tuple[float, bytes]:
    times, out = [], b""
    for _ in range(RUNS):
        began = time.perf_counter()
        done = subprocess.run(args, capture_output=True, check=True, env=_env())
        times.append(time.perf_counter() - began)
        out = done.stdout
    return min(times), out


def daemon_pass(root: Path) -> float:
    """What the daemon's outcome thread spends on one pass when every session is recent:
    each session's outcome read (git) and compared with what the hub has. Best of 3."""
    from datetime import datetime

    from node_agent.outcomes.watch import OutcomeWatch
    from shared.events import Agent, Tokens, UsageEvent

    events = [
        UsageEvent(
            line["uuid"],
            datetime.fromisoformat(line["timestamp"]).timestamp(),
            Agent.CLAUDE_CODE,
            line["message"]["model"],
            Tokens(),
            line["sessionId"],
            project=line["cwd"],
            git_branch=line["gitBranch"],
        )
        for path in sorted((root / "claude" / "projects").glob("*/*.jsonl"))
        for line in map(json.loads, path.read_text().splitlines())
    ]
    last = max(event.ts for event in events)
    runs = []
    for _ in range(RUNS):
        watch = OutcomeWatch(WORK / "spans.json", clock=lambda: last + 60)
        watch.saw(events)
        began = time.perf_counter()
        watch.refresh()
        runs.append(time.perf_counter() - began)
    return min(runs)


@dataclass(frozen=True)
class Shape:
    """A hub store's fleet: `sessions` x `calls` calls of one node, `gap` seconds apart, each
    session with an outcome of one commit every `every` calls."""

    sessions: int
    calls: int
    every: int = 10
    gap: float = 5.0

    @property
    def name(self) -> str:
        return f"hub-s{self.sessions}-c{self.calls}-e{self.every}-g{self.gap:g}"

    def words(self) -> str:
        commits = self.sessions * (self.calls // self.every)
        return (
            f"{self.sessions * self.calls:,} calls in {self.sessions:,} sessions of "
            f"{self.calls:,} ({self.gap:g} s apart), {commits:,} commits (one every "
            f"{self.every} calls)"
        )


# A month of 1,000,000 calls, two ways: many short sessions committing every 10 calls (every
# commit a row of the commit view), and fewer long ones committing every 50 calls.
HUB_SHAPES: Final = (Shape(10_000, 100, 10, 5.0), Shape(1_000, 1_000, 50, 2.5))
CHUNK: Final = 500  # calls per batch


def hub_store(shape: Shape) -> tuple[Path, float]:
    """A hub config whose store holds `shape`'s calls and outcomes, and the CPU seconds
    storing them took (0: built by an earlier run)."""
    from hub.outcomes import create_table, record
    from hub.store import Store
    from shared.events import Agent, Tokens, UsageEvent
    from shared.outcomes import Commit, SessionOutcome
    from tests.fleet_harness import make_hub

    root = WORK / shape.name
    if (root / "done").exists():
        return root / "hub" / "hub.toml", 0.0
    shutil.rmtree(root, ignore_errors=True)
    setup = make_hub(root)
    began = time.process_time()
    seq = 0
    with Store.in_dir(setup.data_dir) as store:
        with store.writing() as db:
            create_table(db)
        for s in range(shape.sessions):
            begin = START + s * shape.calls * shape.gap * 0.3  # sessions overlap
            events = [
                UsageEvent(
                    f"claude:msg_{s}_{n}:req",
                    begin + n * shape.gap,
                    Agent.CLAUDE_CODE,
                    "claude-sonnet-4-5",
                    Tokens(input=10_000, output=1000, cache_read=20_000),
                    f"s{s}",
                    machine="spark01",
                    project=f"/src/repo{s % REPOS}",
                    tool_calls=f"Bash:{n % 7:012x}",
                )
                for n in range(shape.calls)
            ]
            for at in range(0, len(events), CHUNK):
                chunk = events[at : at + CHUNK]
                store.ingest("spark01", "b", seq + 1, seq + len(chunk), chunk, None, time.time())
                seq += len(chunk)
            commits = tuple(
                Commit(f"{s:08x}{n:032x}", begin + n * shape.gap + 2, 3, 1, "trailer", f"step {n}")
                for n in range(shape.every - 1, shape.calls, shape.every)
            )
            outcome = SessionOutcome(
                f"s{s}", time.time(), "ok", "", f"github.com/acme/repo{s % REPOS}", "main", commits
            )
            with store.writing() as db:
                record(db, "spark01", [outcome])
    spent = time.process_time() - began
    (root / "done").write_text("")
    return setup.config, spent


def timed(args: Sequence[str]) -> tuple[float, float, bytes]:
    """Best of RUNS: (wall seconds, CPU seconds of that run, its output)."""
    best: tuple[float, float, bytes] | None = None
    for _ in range(RUNS):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        began = time.perf_counter()
        done = subprocess.run(args, capture_output=True, check=True, env=_env())
        wall = time.perf_counter() - began
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
        if best is None or wall < best[0]:
            best = (wall, cpu, done.stdout)
    assert best is not None
    return best


def hub_main(argv: Sequence[str] | None = None) -> None:
    """The hub's outcome views against `--by day` on stores of a month of 1,000,000 calls."""
    parser = argparse.ArgumentParser(description=hub_main.__doc__)
    parser.add_argument("--sessions", type=int, help="one shape of this many sessions")
    parser.add_argument("--calls", type=int, default=100)
    parser.add_argument("--every", type=int, default=10)
    parser.add_argument("--gap", type=float, default=5.0)
    opts = parser.parse_args(argv)
    shapes: tuple[Shape, ...] = HUB_SHAPES
    if opts.sessions:
        shapes = (Shape(opts.sessions, opts.calls, opts.every, opts.gap),)
    for shape in shapes:
        config, spent = hub_store(shape)
        print(f"hub store: {shape.words()}")
        if spent:
            print(f"  stored in {spent:.0f} s CPU (calls, outcome roll-up and outcomes)")
        report = [sys.executable, "-m", "hub.cli", "report", "--json", "--config", str(config)]
        for by in ("day", "commit", "branch", "pr", "repo"):
            wall, cpu, out = timed([*report, "--by", by])
            rows = len(json.loads(out)["rows"])
            print(
                f"  fleet-hub report --by {by:<6} {wall:5.2f} s wall, {cpu:5.2f} s CPU "
                f"(best of {RUNS}, no hub running), {rows:,} rows"
            )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sessions", type=int, default=200)
    parser.add_argument("--calls", type=int, default=100)
    parser.add_argument("--history", type=int, default=20_000)
    opts = parser.parse_args(argv)
    root = build(opts.sessions, opts.calls, opts.history)
    home = str(root / "claude")
    scan = [sys.executable, "-m", "node_agent.cli", "scan", "--json", home, "--by"]
    by_day, _ = best([*scan, "day"])
    by_commit, out = best([*scan, "commit"])
    report = json.loads(out)
    commits = sum(1 for r in report["rows"] if r["commit"] is not None)
    print(
        f"{opts.sessions} sessions x {opts.calls} calls in {REPOS} repos of "
        f"{opts.history:,} older commits each; {commits} agent commits found"
    )
    print(f"node-agent scan --by day     {by_day:.2f} s (best of {RUNS})")
    print(f"node-agent scan --by commit  {by_commit:.2f} s (+{by_commit - by_day:.2f} s)")
    print(f"node daemon: one pass over {opts.sessions} live sessions {daemon_pass(root):.2f} s")
    hub_main([])


if __name__ == "__main__":
    main()
