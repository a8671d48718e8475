"""What `node-agent scan PATH` accepts: a home, a folder of homes, and any file or folder inside a
home, read as part of that home (same project, session, role and profile as a scan of the whole
home, limited to those files). Anything else is refused with exit 1 naming what a PATH may be."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from node_agent.render import render_json
from node_agent.report import Query, build_report
from node_agent.simulate.fleet import generate_fleet
from shared.config import NodeConfig, load_config
from tests.test_cli_scan import run

BY = ("project", "session", "role", "profile", "model")


@pytest.fixture(scope="module")
def machine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("paths") / "fleet"
    generate_fleet(root, seed=5, machines=1, start=datetime(2026, 10, 12, tzinfo=UTC), days=2)
    return root / "spark01"


@pytest.fixture(scope="module")
def config(machine: Path, tmp_path_factory: pytest.TempPathFactory) -> NodeConfig:
    path = tmp_path_factory.mktemp("config") / "node.toml"
    path.write_text(
        f'node = "spark01"\n\n[[profiles]]\nname = "max-a"\nagent = "claude-code"\n'
        f'home = "{machine / "claude"}"\nbilling = "subscription"\nplan = "max_20x"\n'
    )
    return load_config(path)


def rows(config: NodeConfig, *paths: Path) -> dict[tuple[Any, ...], dict[str, Any]]:
    report = build_report(list(paths), config, Query(BY, UTC), jobs=1)
    assert not report.path_problems, report.path_problems
    return {tuple(row[k] for k in BY): row for row in render_json(report)["rows"]}


def test_a_project_folder_is_its_part_of_the_home(machine: Path, config: NodeConfig) -> None:
    home = rows(config, machine / "claude")
    projects = sorted(p for p in (machine / "claude" / "projects").iterdir() if p.is_dir())
    # The one with subagent transcripts, so roles and the files below the session count too.
    folder = next(p for p in projects if any(p.glob("*/subagents/*.jsonl")))
    part = rows(config, folder)
    assert {key[2] for key in part} == {"main", "subagent"}
    assert {key[3] for key in part} == {"max-a"}  # the home's profile
    assert part == {key: row for key, row in home.items() if key[0] in {k[0] for k in part}}


def test_a_session_file_is_attributed_as_in_its_home(machine: Path, config: NodeConfig) -> None:
    home = rows(config, machine / "claude")
    transcript = next((machine / "claude" / "projects").glob("*/*/subagents/agent-*.jsonl"))
    part = rows(config, transcript)
    assert part and all(key in home for key in part)
    assert {key[2] for key in part} == {"subagent"}
    assert {key[3] for key in part} == {"max-a"}


@pytest.mark.parametrize(
    "inside",
    ["codex/sessions/2026/10", "gemini/tmp/acme-api", "claude/projects"],
)
def test_folders_inside_other_homes(machine: Path, config: NodeConfig, inside: str) -> None:
    home = rows(config, machine / inside.split("/")[0])
    part = rows(config, machine / inside)
    assert part and all(key in home for key in part), inside


def test_a_file_given_with_its_home_counts_once(machine: Path, config: NodeConfig) -> None:
    transcript = next((machine / "claude" / "projects").glob("*/*.jsonl"))
    assert rows(config, machine / "claude", transcript) == rows(config, machine / "claude")


def test_a_folder_of_files_no_source_reads_says_so(tmp_path: Path) -> None:
    # ccusage's Codex fixture layout: a sessions/ dir, but no rollout-*.jsonl name.
    loose = tmp_path / "codex" / "sessions" / "project-alpha" / "session-alpha.jsonl"
    loose.parent.mkdir(parents=True)
    loose.write_text("{}\n")
    proc = run(str(tmp_path / "codex"))
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert f"{tmp_path / 'codex'}: a Codex home" in proc.stderr
    assert "none of its 1 file(s) is one of the rollouts" in proc.stderr


def test_a_path_in_no_home_is_refused_naming_what_a_path_may_be(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello\n")
    for path in (tmp_path, tmp_path / "notes.txt"):
        proc = run(str(path))
        assert proc.returncode == 1, path
        [line] = proc.stderr.splitlines()
        assert line.startswith(f"node-agent scan: {path}: no agent's logs: a PATH may be")
        assert "a Claude Code config dir" in line and "a Codex home" in line


def test_a_file_inside_a_home_that_holds_no_usage(machine: Path) -> None:
    meta = next((machine / "claude" / "projects").glob("*/*/subagents/*.meta.json"))
    proc = run(str(meta))
    assert proc.returncode == 1
    assert f"{meta}: inside a Claude Code config dir" in proc.stderr
    assert f"at {machine / 'claude'}, but it is none of the session transcripts" in proc.stderr
