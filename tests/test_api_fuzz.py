"""schemathesis against the served OpenAPI document of a real `fleet-hub serve`: every
operation (but the endless stream) with generated parameters and bodies, as an operator.
Bounded: a few examples per operation, a timeout per request and for the whole run. No
answer may be a 5xx, none may hang, and each must fit the schema the document gives it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.api_harness import ServedHub, little_fleet

SCHEMATHESIS = shutil.which("schemathesis", path=str(Path(sys.executable).parent))


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[ServedHub]:
    with little_fleet(tmp_path) as served:
        yield served


@pytest.mark.skipif(SCHEMATHESIS is None, reason="schemathesis not installed (dev extra)")
def test_fuzzing_the_openapi_document_finds_no_server_error(hub: ServedHub) -> None:
    assert SCHEMATHESIS is not None
    run = subprocess.run(
        [
            SCHEMATHESIS,
            "run",
            f"{hub.url}/api/v1/openapi.json",
            "--checks",
            "not_a_server_error,response_schema_conformance",
            "--max-examples",
            "25",
            "--request-timeout",
            "10",
            "--exclude-path",
            "/api/v1/stream",
            "--header",
            f"Authorization: Bearer {hub.tokens['operator']}",
            "--generation-deterministic",
            "--no-color",
        ],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
        cwd=hub.tmp,  # its example cache stays out of the checkout
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    log = (hub.setup.config.parent / "hub.log").read_text()
    assert "Traceback" not in log, log[-4000:]
