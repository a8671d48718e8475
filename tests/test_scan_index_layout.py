"""The scan index keeps each file's reading as a msgpack bin: loading the index then skips it by
the length in its header, where a nested value had to be walked through element by element.
The index is mapped, not read (`map_regular`): the readings are views of the mapping."""

from __future__ import annotations

import errno
import mmap
import os
from datetime import UTC
from pathlib import Path

import msgspec
import orjson
import pytest

from node_agent import scan_index
from node_agent.regular_file import map_regular
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


def _scanned(tmp_path: Path) -> Path:
    file = tmp_path / "home" / "projects" / "p1" / "11111111-aaaa-4000-8000-000000000001.jsonl"
    file.parent.mkdir(parents=True)
    file.write_bytes(b"".join(_line(n) + b"\n" for n in range(3)))
    cache = tmp_path / "cache"
    build_report([tmp_path / "home"], NodeConfig(), QUERY, jobs=1, cache_dir=cache)
    return cache


def test_an_entry_holds_its_reading_as_a_bin_and_loads_as_a_view_of_the_index(
    tmp_path: Path,
) -> None:
    cache = _scanned(tmp_path)
    data = (cache / scan_index.INDEX_NAME).read_bytes()
    (entry,) = msgspec.msgpack.decode(data)[1].values()  # untyped: bin gives bytes
    position = list(scan_index.Entry.__struct_fields__).index("packed")
    assert isinstance(entry[position], bytes)  # not a nested array

    index, warning = scan_index.ScanIndex.load(cache)
    assert warning is None
    (loaded,) = index.entries.values()
    assert isinstance(loaded.reading, memoryview) and loaded.reading.obj is not None
    assert loaded.reading is loaded.packed
    assert len(loaded.kept().runs) == 3


@pytest.mark.skipif(os.name != "posix", reason="mapped where files can be replaced while mapped")
def test_the_index_is_mapped_and_its_readings_are_views_of_the_mapping(tmp_path: Path) -> None:
    cache = _scanned(tmp_path)
    index, warning = scan_index.ScanIndex.load(cache)
    assert warning is None
    (loaded,) = index.entries.values()
    assert isinstance(loaded.reading.obj, mmap.mmap)
    # Written anew by a rename (never cut short in place): the views of the old file stand.
    index.save(whole=True)
    assert len(loaded.kept().runs) == 3


def test_map_regular_gives_an_empty_file_as_no_bytes_and_refuses_a_pipe(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    assert map_regular(empty) == b""
    os.mkfifo(tmp_path / "pipe")
    with pytest.raises(OSError) as refused:
        map_regular(tmp_path / "pipe")
    assert refused.value.errno == errno.EINVAL
    with pytest.raises(FileNotFoundError):
        map_regular(tmp_path / "none")
