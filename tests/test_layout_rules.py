"""The import rules of DESIGN.md: node_agent never imports hub and the reverse; shared and
pricing import neither; only hub/tui may import textual. Checked on the source (every import
statement, including ones inside functions) and at run time (what importing pulls in)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

FORBIDDEN = {
    "node_agent": {"hub", "textual"},
    "hub": {"node_agent", "textual"},
    "shared": {"hub", "node_agent", "pricing", "textual"},
    "pricing": {"hub", "node_agent", "textual"},
}


def imported_roots(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    roots: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_static_import_rules(package: str) -> None:
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"no modules found in {package}"
    violations = []
    for path in files:
        forbidden = FORBIDDEN[package]
        if package == "hub" and "tui" in path.relative_to(ROOT / "hub").parts:
            forbidden = forbidden - {"textual"}  # hub/tui is the one place Textual lives
        if bad := imported_roots(path) & forbidden:
            violations.append(f"{path.relative_to(ROOT)} imports {sorted(bad)}")
    assert not violations


def test_rule_checker_sees_violations(tmp_path: Path) -> None:
    bad = tmp_path / "m.py"
    bad.write_text("def f():\n    from hub.cli import main\n    import textual.app\n")
    assert {"hub", "textual"} <= imported_roots(bad)


@pytest.mark.parametrize(
    ("module", "forbidden"),
    [
        ("node_agent.cli", ("hub", "textual")),
        ("hub.cli", ("node_agent", "textual")),
        ("pricing.rollup", ("hub", "node_agent", "textual")),
    ],
)
def test_runtime_imports(module: str, forbidden: tuple[str, ...]) -> None:
    code = (
        f"import sys, {module}\n"
        f"bad = [m for m in sys.modules if m.split('.')[0] in {forbidden!r}]\n"
        "print(bad); sys.exit(1 if bad else 0)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


WEB_STACK = {"fastapi", "uvicorn", "starlette", "pydantic", "prometheus_client", "httpx"}
# The dashboard attached to a hub is the API's client: httpx there, and only there (loaded
# when the dashboard attaches, not by the CLI or the embedded dashboard: see below).
API_CLIENTS = {ROOT / "hub" / "remote.py": {"httpx"}}


def test_only_hub_api_imports_the_web_stack() -> None:
    """The hub's core (and the dashboard) stand without the web server: only hub/api, which
    `fleet-hub serve` alone loads, may import it."""
    violations = []
    for package in ("hub", "shared", "pricing", "node_agent"):
        for path in sorted((ROOT / package).rglob("*.py")):
            if path.is_relative_to(ROOT / "hub" / "api"):
                continue
            allowed = API_CLIENTS.get(path, set())
            if bad := imported_roots(path) & (WEB_STACK - allowed):
                violations.append(f"{path.relative_to(ROOT)} imports {sorted(bad)}")
    assert not violations


def test_the_cli_and_the_dashboard_load_no_web_stack() -> None:
    code = (
        "import sys, hub.cli, hub.serve, hub.service, hub.dashboard, hub.api_client\n"
        f"bad = [m for m in sys.modules if m.split('.')[0] in {sorted(WEB_STACK)!r}]\n"
        "print(bad); sys.exit(1 if bad else 0)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
