"""`node-agent scan` against what an adversarial review put in its way (hostile cache files,
kills, odd environments): real console-script processes, real files."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from node_agent.scan_index import WINDOW_BYTES
from node_agent.simulate.fleet import generate_fleet
from tests.test_scan_answer import _old_enough
from tests.test_scan_answer_edges import NODE_AGENT, _env, _scan, _served
from tests.test_scan_index import _home, usage_line


def _cache(tmp_path: Path) -> Path:
    return tmp_path / "xdg-cache" / "fleetmeter"


def test_a_pipe_or_a_device_in_a_kept_answers_place_neither_blocks_nor_fills(
    tmp_path: Path,
) -> None:
    """An answer file is read only when it is a regular file: opening a FIFO blocked the scan
    for good, and /dev/zero was read until memory ran out."""
    home = _home(tmp_path)
    env = _env(tmp_path)
    _old_enough(tmp_path)
    want = _scan(env, str(home))
    assert want.returncode == 0 and not want.stderr, want.stderr
    assert _served(env, str(home)).stdout == want.stdout
    (kept,) = (_cache(tmp_path) / "answers").iterdir()
    for hostile in (lambda: os.mkfifo(kept), lambda: kept.symlink_to("/dev/zero")):
        kept.unlink()
        hostile()
        done = _scan(env, str(home))
        assert (done.returncode, done.stdout, done.stderr) == (0, want.stdout, "")


def test_a_pipe_or_a_device_in_the_price_cache_neither_blocks_nor_fills(tmp_path: Path) -> None:
    """The parsed price tables' cache is read only when it is a regular file (as above)."""
    home = _home(tmp_path)
    env = _env(tmp_path)
    want = _scan(env, "--no-cache", str(home))
    assert want.returncode == 0 and not want.stderr, want.stderr
    (tables,) = _cache(tmp_path).glob("price-tables-*.pickle")
    for hostile in (lambda: os.mkfifo(tables), lambda: tables.symlink_to("/dev/zero")):
        tables.unlink()
        hostile()
        done = _scan(env, "--no-cache", str(home))
        assert (done.returncode, done.stdout, done.stderr) == (0, want.stdout, "")
        assert tables.is_file() and not tables.is_symlink()  # written anew in its place


def test_a_folder_in_the_index_or_journals_place_is_told_in_one_line_naming_it(
    tmp_path: Path,
) -> None:
    """What keeps the index from being read keeps it from being written: told once a scan
    (it was told twice, and a folder in the journal's place was told as the index's)."""
    home = _home(tmp_path)
    env = _env(tmp_path)
    want = _scan(env, str(home))
    assert want.returncode == 0 and not want.stderr, want.stderr
    cache = _cache(tmp_path)
    journal = cache / "scan-index.journal"
    journal.mkdir()
    first = _scan(env, str(home))
    assert (first.returncode, first.stdout) == (0, want.stdout)
    said = f"node-agent scan: cannot read the scan index journal {journal}: not a regular file\n"
    assert first.stderr == said
    journal.rmdir()
    for name in ("scan-index.msgpack", "scan-index.journal"):
        (cache / name).unlink(missing_ok=True)
    (cache / "scan-index.msgpack").mkdir()
    done = _scan(env, str(home))
    assert (done.returncode, done.stdout) == (0, want.stdout)
    assert done.stderr.count("\n") == 1 and "scan-index.msgpack: not a regular file" in done.stderr
    # The cache folder a file: one line too.
    shutil.rmtree(cache)
    cache.write_bytes(b"not a folder")
    done = _scan(env, str(home))
    assert (done.returncode, done.stdout) == (0, want.stdout)
    assert done.stderr.count("\n") == 1 and "Not a directory" in done.stderr, done.stderr


def test_a_clean_scan_from_a_working_directory_that_is_gone_fails_nothing(tmp_path: Path) -> None:
    """Its answer, which would be kept under the working directory, is not kept: the scan
    printed its report, then 'No such file or directory' and exit status 1."""
    home = _home(tmp_path)
    env = _env(tmp_path)
    want = _scan(env, str(home))
    _old_enough(tmp_path)  # (else no answer is kept, and none tried)
    gone = tmp_path / "gone"
    gone.mkdir()
    done = subprocess.run(
        f"cd {gone} && rmdir {gone} && {NODE_AGENT} scan --json {home}",
        shell=True, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    said = [line for line in done.stderr.splitlines() if not line.startswith("import time")]
    assert (done.returncode, done.stdout, said) == (0, want.stdout, [])


def test_a_home_whose_path_is_not_utf8_is_kept_in_the_index(tmp_path: Path) -> None:
    """msgpack holds only UTF-8 names: such a file's entry is not kept (it is read whole each
    time), where writing the index failed the whole scan ('unexpected error', no report)."""
    home = _home(tmp_path / os.fsdecode(b"caf\xe9"))
    env = _env(tmp_path)
    want = _scan(env, "--no-cache", str(home))
    assert want.returncode == 0 and not want.stderr, want.stderr
    for _ in range(2):  # the index written, then read back
        done = _scan(env, str(home))
        assert (done.returncode, done.stdout, done.stderr) == (0, want.stdout, "")


def test_a_problem_in_a_file_whose_name_is_not_utf8_is_printed(tmp_path: Path) -> None:
    """Its name is printed with \\xNN for the bytes that are not UTF-8: orjson (--json) and a
    strict UTF-8 stdout (any UTF-8 locale but C.UTF-8) refused it, and the scan failed."""
    home = _home(tmp_path)
    torn = next((home / "projects").rglob("*.jsonl")).with_name(os.fsdecode(b"t\xfe.jsonl"))
    torn.write_bytes(b'{"torn\n')
    env = _env(tmp_path, PYTHONIOENCODING="utf-8:strict")
    done = _scan(env, "--no-cache", str(home))
    assert done.returncode == 0 and not done.stderr, done.stderr
    (problem,) = json.loads(done.stdout)["problems"]
    assert problem["path"] == str(torn.parent / "t\\xfe.jsonl")
    text = subprocess.run(
        [NODE_AGENT, "scan", "--no-cache", str(home)],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    said = [line for line in text.stderr.splitlines() if not line.startswith("import time")]
    assert (text.returncode, said) == (0, [])
    assert f"{torn.parent}/t\\xfe.jsonl:1: " in text.stdout


def test_a_line_rewritten_in_place_to_the_same_size_is_read_again(tmp_path: Path) -> None:
    """Written without growing is no append: the file is read from the start. The index read
    it on from its kept reading's end, as grown, when the 4 KiB hashed before that end were
    alike: the old figures were printed from then on."""
    home = tmp_path / "claude"
    transcript = home / "projects" / "p" / "s.jsonl"
    transcript.parent.mkdir(parents=True)
    transcript.write_bytes(b"".join(usage_line(n, 20 + n) + b"\n" for n in range(60)))
    assert transcript.stat().st_size > 4 * WINDOW_BYTES
    env = _env(tmp_path)
    _old_enough(tmp_path)
    assert _scan(env, str(home)).returncode == 0
    data = transcript.read_bytes()
    at = data.index(b'"output_tokens":20,')
    transcript.write_bytes(data[:at] + b'"output_tokens":29,' + data[at + 19 :])  # same size
    _old_enough(tmp_path)  # (not in the clock tick of a read: that case is told apart)
    want = _scan(env, "--no-cache", str(home))
    done = _scan(env, str(home))
    assert (done.returncode, done.stderr) == (0, "")
    assert json.loads(done.stdout) == json.loads(want.stdout)


def test_what_a_killed_scan_left_of_the_index_is_swept_when_it_is_written_whole(
    tmp_path: Path,
) -> None:
    """A scan killed while writing the index (or the journal) leaves its `.NAME.PID` file:
    the next scan that writes the index whole removes those of processes that are gone (each
    kill there left a copy of the index for good); a live process's is left alone, and so is
    one written in the last minute."""
    home = _home(tmp_path)
    env = _env(tmp_path)
    cache = _cache(tmp_path)
    cache.mkdir(parents=True)
    dead = subprocess.Popen(["true"])
    dead.wait()
    left = [cache / f".scan-index.msgpack.{dead.pid}", cache / f".scan-index.journal.{dead.pid}"]
    writing = cache / f".scan-index.msgpack.{os.getpid()}"  # alive: a scan still writing
    others = [writing, cache / ".scan-index.msgpack.x", cache / "scan-index.msgpack.7"]
    for path in left + others:
        path.write_bytes(b"partial")
        os.utime(path, (time.time() - 120, time.time() - 120))  # (not in the last minute)
    young = cache / f".scan-index.journal.{dead.pid + 100_000_000}"  # no such process
    young.write_bytes(b"partial")  # (written in the last minute: maybe another namespace's)
    others.append(young)
    done = _scan(env, str(home))  # no index yet: written whole
    assert (done.returncode, done.stderr) == (0, "")
    assert not any(path.exists() for path in left)
    assert all(path.exists() for path in others)


@pytest.mark.skipif(
    not hasattr(os, "fork") or os.geteuid() == 0, reason="root is not held to RLIMIT_NPROC"
)
def test_a_scan_that_may_start_no_process_or_thread_reads_in_process(tmp_path: Path) -> None:
    """Under a limit on processes (a container's, a user's), a helper, the worker pool or the
    read-ahead thread that cannot be started is done without: the scan failed ('Resource
    temporarily unavailable', "can't start new thread") with no report."""
    import resource

    fleet = tmp_path / "fleet"
    generate_fleet(fleet, seed=3, machines=1, start=datetime(2026, 10, 12, tzinfo=UTC), days=1)
    homes = [str(p) for p in sorted((fleet / "spark01").iterdir()) if p.name in ("claude", "codex")]
    env = _env(tmp_path)
    want = _scan(env, "--no-cache", "--jobs", "1", *homes)
    assert want.returncode == 0 and json.loads(want.stdout)["total"]["calls"] > 0, want.stderr

    def no_more_processes() -> None:  # (this user's processes already count one at least)
        resource.setrlimit(resource.RLIMIT_NPROC, (1, 1))

    for args in (["--no-cache"], [], []):
        done = _scan(env, "--jobs", "3", *args, *homes, preexec_fn=no_more_processes)
        assert (done.returncode, done.stderr) == (0, "")
        assert json.loads(done.stdout) == json.loads(want.stdout)


def test_a_pipe_named_as_a_path_is_said_to_be_one_not_empty(tmp_path: Path) -> None:
    home = _home(tmp_path)
    pipe = home / "projects" / "p" / "fifo.jsonl"
    pipe.parent.mkdir(parents=True)
    os.mkfifo(pipe)
    done = _scan(_env(tmp_path), "--no-cache", str(pipe))
    assert done.returncode == 1
    assert "neither a regular file nor a folder" in done.stderr and "empty" not in done.stderr


def test_ctrl_c_during_a_scan_with_helpers_says_interrupted_once(tmp_path: Path) -> None:
    """Ctrl-C reaches the scan and its forked helpers (one process group): each helper said
    it 'failed (KeyboardInterrupt: ); its items were done again in the main process', which
    the interrupted scan did not do."""
    home = tmp_path / "claude"
    lines = b"".join(usage_line(n, 10 + n % 40) + b"\n" for n in range(400))
    for project in range(150):
        folder = home / "projects" / f"p{project}"
        folder.mkdir(parents=True)
        (folder / "s.jsonl").write_bytes(lines)
    scan = subprocess.Popen(
        [NODE_AGENT, "scan", "--json", "--no-cache", "--jobs", "2", str(home)],
        env={**_env(tmp_path), "PYTHONPROFILEIMPORTTIME": ""},
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while not _children(scan.pid) and scan.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    assert _children(scan.pid), "no helper was forked"
    os.killpg(scan.pid, signal.SIGINT)  # as a terminal's Ctrl-C
    _, err = scan.communicate(timeout=60)
    assert (scan.returncode, err) == (130, "node-agent scan: interrupted\n")


def _children(pid: int) -> list[int]:
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
        return [
            int(child)
            for task in tasks
            for child in Path(f"/proc/{pid}/task/{task}/children").read_text().split()
        ]
    except OSError:
        return []


def test_a_scan_without_stdout_whose_answer_could_be_kept_says_so_in_one_line(
    tmp_path: Path,
) -> None:
    """With files old enough for an answer to be kept, the scan flushed the stdout it did not
    have: 'unexpected error: AttributeError' (the existing test's files were too young)."""
    home = _home(tmp_path)
    env = _env(tmp_path)
    _old_enough(tmp_path)
    done = _scan(env, str(home), stdout=None, preexec_fn=lambda: os.close(1))
    assert done.returncode == 1
    assert done.stderr == "node-agent scan: no standard output to write to\n"
    assert not (_cache(tmp_path) / "answers").exists()  # nothing printed, nothing kept


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full")
def test_an_output_that_cannot_be_written_is_told_as_the_outputs(tmp_path: Path) -> None:
    """A full disk under stdout said 'node-agent scan: No space left on device' (which could
    be the cache's) when the scan flushed its output to keep an answer, or wrote more than a
    buffer; a served scan and the exit's flush say it as here."""
    home = _home(tmp_path)
    env = _env(tmp_path)
    _old_enough(tmp_path)  # an answer is to be kept: the output is flushed first
    with open("/dev/full", "wb") as full:
        done = _scan(env, str(home), stdout=full)
    assert done.returncode == 1
    said = "node-agent scan: could not write the output: [Errno 28] No space left on device\n"
    assert done.stderr == said


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a file whatever its permissions")
def test_a_transcript_no_longer_readable_is_not_taken_from_the_index(tmp_path: Path) -> None:
    """Its permissions taken away change its ctime, not its mtime: the index served its old
    reading, where a read (and --no-cache) tells it cannot be opened and counts none of it."""
    home = _home(tmp_path)
    env = _env(tmp_path)
    _old_enough(tmp_path)
    assert _scan(env, str(home)).returncode == 0
    transcript = next((home / "projects").rglob("*.jsonl"))
    transcript.chmod(0)
    want = _scan(env, "--no-cache", str(home))
    assert "cannot" in want.stdout  # (told among the problems)
    done = _scan(env, str(home))
    assert (done.returncode, done.stderr) == (want.returncode, want.stderr)
    assert json.loads(done.stdout) == json.loads(want.stdout)


class _Planted:
    """A pickle that, loaded, creates the file at `marker`: code run by whoever loads it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, ...]:
        return (Path.touch, (self.marker,))


@pytest.mark.skipif(not hasattr(os, "chown") or os.geteuid() != 0, reason="needs chown")
def test_cache_files_of_another_user_are_not_loaded(tmp_path: Path) -> None:
    """The price tables' cache and the index's priced reports are pickles: one planted by
    another user (a shared cache folder, a user's cache under a scan run as root) ran its
    code in the scan. Such files are not read: the tables are parsed, the index read anew."""
    import pickle

    home = _home(tmp_path)
    env = _env(tmp_path)
    want = _scan(env, str(home))
    assert want.returncode == 0 and not want.stderr, want.stderr
    cache = _cache(tmp_path)
    (tables,) = cache.glob("price-tables-*.pickle")
    marker = tmp_path / "code-ran"
    tables.write_bytes(pickle.dumps(_Planted(marker)))
    index = cache / "scan-index.msgpack"
    for planted in (tables, index):
        os.chown(planted, 65534, 65534)
    shutil.rmtree(cache / "answers", ignore_errors=True)
    done = _scan(env, "--no-cache", str(home))  # (the tables are loaded: no priced report kept)
    assert not marker.exists()
    assert (done.returncode, done.stdout, done.stderr) == (0, want.stdout, "")
    done = _scan(env, str(home))
    assert (done.returncode, done.stdout) == (0, want.stdout)
    assert (
        done.stderr
        == f"node-agent scan: cannot read the scan index {index}: owned by another user\n"
    )
