"""The dashboard's log file (`fleet-hub`, attached or embedded): what the hub says, not a line
per HTTP request the attached dashboard makes (httpx logs each at INFO)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.fleet_harness import ROOT

SCRIPT = """
import logging, sys
from pathlib import Path
from hub.cli import _log_to_file
_log_to_file(Path(sys.argv[1]))
logging.getLogger("httpx").info('HTTP Request: GET http://127.0.0.1:7463/api/v1/budgets "200 OK"')
logging.getLogger("httpx").warning("a request that went wrong")
logging.getLogger("hub.remote").info("attached to http://127.0.0.1:7463")
"""


def test_the_log_keeps_the_hubs_lines_not_every_request(tmp_path: Path) -> None:
    log = tmp_path / "state" / "fleet-hub-dashboard.log"
    # a process of its own: basicConfig does nothing where a handler is set (pytest sets some)
    subprocess.run([sys.executable, "-c", SCRIPT, str(log)], cwd=ROOT, check=True, timeout=60)
    text = log.read_text()
    assert "attached to http://127.0.0.1:7463" in text
    assert "a request that went wrong" in text
    assert "HTTP Request" not in text
