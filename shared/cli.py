"""What both console scripts (`node-agent`, `fleet-hub`) share: one-line usage errors,
`--version`, argument types that refuse nonsense, and the guard that turns a closed pipe,
Ctrl-C, a bad config or a failed file operation into one line on stderr and an exit status,
never a traceback.

Exit statuses: 0 done, 1 a runtime failure, 2 bad usage or config, 130 interrupted.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from datetime import date
from typing import Any, Final, NoReturn

from shared.config import ConfigError

EXIT_FAILURE: Final = 1
EXIT_USAGE: Final = 2
EXIT_INTERRUPTED: Final = 130
# Set to see the traceback of an unexpected error instead of its one line.
DEBUG_VARIABLE: Final = "FLEETMETER_DEBUG"


def terminal_columns() -> int:
    """`shutil.get_terminal_size().columns` without importing shutil (which loads bz2 and lzma:
    ~2 ms of every start, as argparse makes a formatter for each option it adds)."""
    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
        except (AttributeError, ValueError, OSError):
            columns = 0
    return columns or 80


class _HelpFormatter(argparse.HelpFormatter):
    """argparse's formatter, told the width (else it asks shutil)."""

    def __init__(
        self,
        prog: str,
        indent_increment: int = 2,
        max_help_position: int = 24,
        width: int | None = None,
    ) -> None:
        width = terminal_columns() - 2 if width is None else width  # as argparse computes it
        super().__init__(prog, indent_increment, max_help_position, width)


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line that points to --help (subcommands inherit it:
    add_subparsers builds them with the parser's own class)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: {message} (see `{self.prog} --help`)\n")


class _VersionAction(argparse.Action):
    """--version, looked up only when asked: importlib.metadata costs every scan start-up time."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        kwargs.setdefault("help", "print the version and exit")
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *_: object) -> NoReturn:
        try:
            print(f"{parser.prog} {package_version()}", flush=True)
        except BrokenPipeError:
            _detach_stdout()
            parser.exit(EXIT_FAILURE)
        parser.exit()


def add_version(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--version", action=_VersionAction)


def package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("fleetmeter")
    except PackageNotFoundError:
        return "unknown (not installed)"


def positive_int(text: str) -> int:
    """argparse type: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {value}")
    return value


def positive_float(text: str) -> float:
    """argparse type: a finite number above 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number above 0, not {text}")
    return value


def iso_day(text: str) -> date:
    """argparse type: YYYY-MM-DD."""
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a day like 2026-10-12") from None


def day_range_error(since: date | None, until: date | None) -> str | None:
    """Why --since/--until select no day at all, or None when they are fine."""
    if since is not None and until is not None and since > until:
        return f"--since {since} is after --until {until}: swap them"
    return None


def guarded(prog: str, command: Callable[[], int]) -> int:
    """Run a subcommand; what it did not handle becomes one line on stderr and a status."""
    try:
        return command()
    except BrokenPipeError:
        # The reader went away (`| head`): say so once; nothing more can reach it.
        _detach_stdout()
        return _fail(prog, "output closed early (broken pipe): the rest was not written")
    except KeyboardInterrupt:
        return _fail(prog, "interrupted", EXIT_INTERRUPTED)
    except ConfigError as exc:
        return _fail(prog, str(exc), EXIT_USAGE)
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        return _fail(prog, f"{where}{exc.strerror or exc}")
    except Exception as exc:
        if os.environ.get(DEBUG_VARIABLE):
            raise
        return _fail(
            prog,
            f"unexpected error: {type(exc).__name__}: {exc} (a bug: please report it; "
            f"{DEBUG_VARIABLE}=1 shows where it happened)",
        )


def _fail(prog: str, message: str, status: int = EXIT_FAILURE) -> int:
    print(f"{prog}: {message}", file=sys.stderr)
    return status


def _detach_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's last flush does not fail again."""
    try:
        fileno = sys.stdout.fileno()
    except (OSError, ValueError):  # replaced by a test's capture: nothing to detach
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fileno)
    finally:
        os.close(devnull)
