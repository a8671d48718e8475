"""The `node-agent` program: the calls an agent makes synchronously (`hook`, `statusline`)
skip the full command line's imports (a third of a second), and so does a `scan` whose kept
answer still holds (`scan_answer`); everything else goes to the full command line."""

from __future__ import annotations

import os
import sys

# Not `typing.TYPE_CHECKING`: a scan served its kept answer loads neither typing nor
# collections.abc (with contextlib and warnings, ~3 ms of its ~30 ms; more on a cold disk).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import NoReturn


# What the scan leaves to the OS at the process's exit (`_leave`) instead of freeing it object
# by object: a first scan's readings and index (~2 ms of its serial end). None while the process
# goes on after the scan (`main` called with its arguments: a test, say).
_left_at_exit: list[object] | None = None


def left_at_exit() -> list[object] | None:
    """Where a scan may put what it no longer needs, when the process ends with it."""
    return _left_at_exit


def fast_command(args: Sequence[str]) -> int | None:
    """Run `hook EVENT` or `statusline` (not `statusline install`); None for anything else."""
    if args and args[0] == "hook":
        from node_agent.agent_gates import run_hook

        return run_hook(args[1:])
    if (
        args
        and args[0] == "statusline"
        and (len(args) == 1 or args[1] not in ("install", "remove"))
    ):
        from node_agent.agent_gates import run_statusline

        return run_statusline(args[1:])
    return None


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    done = fast_command(args)
    if done is not None:
        return done
    if args[:1] != ["scan"]:
        from node_agent.cli import main as full

        return full(args)
    import gc

    # What a scan's start-up builds (its modules' classes, functions, tables) is never garbage,
    # and walking it again and again cost ~5% of that start-up: the cyclic collector is off
    # until the reading begins (`cli._batch_gc` turns it on, with the start-up left out).
    enabled = gc.isenabled()
    gc.disable()
    try:
        from node_agent.scan_answer import serve

        if serve(args):
            return 0
        from node_agent.cli import main as full

        if argv is None:  # a process of its own (the console script): it ends with the scan
            global _left_at_exit
            _left_at_exit = []
        code = full(args)
    except KeyboardInterrupt:  # Ctrl-C before the command's own handling (`guarded`) took over
        _say("interrupted")
        code = 130  # (shared.cli.EXIT_INTERRUPTED: not imported by a served scan)
    finally:
        if enabled:
            gc.enable()
    if argv is None:
        _leave(code)  # a process of its own (the console script): nothing after it
    return code


def _leave(code: int) -> NoReturn:
    """Exit without tearing the interpreter down: freeing a scan's objects one by one cost
    ~20 ms of a 0.17 s scan (26 MB of Codex rollouts), and the OS takes them back at once. A
    scan has nothing left to run at exit (its index and price cache are written, its workers
    joined), so only the output is flushed; a reader gone by then gets the commands' one line."""
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        _say("output closed early (broken pipe): the rest was not written")
        code = code or 1
    except AttributeError:  # None: started without fd 1, so the report went nowhere
        if not code:  # (else the scan has told its own error: one line is enough)
            _say("no standard output to write to")
        code = code or 1
    except (OSError, ValueError) as exc:  # a full disk, say
        _say(f"could not write the output: {exc}")
        code = code or 1
    if sys.stderr is not None:  # (None: started without fd 2, which loses nothing of stdout)
        try:  # noqa: SIM105 (contextlib is not loaded at start-up: a scan's ms)
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


def _say(why: str) -> None:
    if sys.stderr is not None:
        try:  # noqa: SIM105 (contextlib is not loaded at start-up)
            print(f"node-agent scan: {why}", file=sys.stderr)
        except (OSError, ValueError):
            pass


if __name__ == "__main__":
    sys.exit(main())
