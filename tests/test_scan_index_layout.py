"""The scan index keeps each file's reading as a msgpack bin: loading the index then skips it by
the length in its header, where a nested value had to be walked through element by element."""

from __future__ import annotations

from datetime import UTC
from pathlib import Path

import msgspec
import orjson

from node_agent import scan_index
from node_agent.report import Query, build_report
from shared.config import NodeConfig

QUERY = Query(("day",), UTC)


def _line(n: int) -> bytes:
    return orjson.dumps(
        {
            "type": "assistant",
            "timestamp": "2026-03-01T10:00:00.000Z",
            "sessionId": "11111111-aaaa-4000-8000-000000000001",
            "requestId": f"req_{n}",
            "message": {
                "id": f"msg_{n}",
                "model": "claude-sonnet-4-5",
                "usage": {"input_tokens": 3, "output_tokens": 10 + n},
            },
        }
    )


def test_an_entry_holds_its_reading_as_a_bin_and_loads_as_a_view_of_the_index(
    tmp_path: Path,
) -> None:
    file = tmp_path / "home" / "projects" / "p1" / "11111111-aaaa-4000-8000-000000000001.jsonl"
    file.parent.mkdir(parents=True)
    file.write_bytes(b"".join(_line(n) + b"\n" for n in range(3)))
    cache = tmp_path / "cache"
    build_report([tmp_path / "home"], NodeConfig(), QUERY, jobs=1, cache_dir=cache)

    data = (cache / scan_index.INDEX_NAME).read_bytes()
    (entry,) = msgspec.msgpack.decode(data)[1].values()  # untyped: bin gives bytes
    position = list(scan_index.Entry.__struct_fields__).index("reading")
    assert isinstance(entry[position], bytes)  # not a nested array

    index, warning = scan_index.ScanIndex.load(cache)
    assert warning is None
    (loaded,) = index.entries.values()
    assert isinstance(loaded.reading, memoryview) and loaded.reading.obj is not None
    assert len(loaded.kept().runs) == 3
