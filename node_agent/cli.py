"""`node-agent`: the per-machine command. `scan` reads local agent logs and prints a cost report;
`init` writes the node's config and key; `install-service` writes its systemd unit."""

# (Not in the docstring: it is the --help text.) Each command imports what it needs when it
# runs: a scan is often a short process, and the other commands' modules (tomlkit, the agents'
# settings, the daemon) would cost every scan's start. A scan builds only its own subparser for
# the same reason.

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, tzinfo
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TextIO, cast

from node_agent.entry import fast_command, left_at_exit
from pricing.outcome_keys import OR_AN_OUTCOME, OUTCOME_KEYS, OutcomeKeyError, check_outcome_keys
from pricing.rollup import GROUP_KEYS, UnknownGroupKeyError, check_keys
from shared.cli import (
    EXIT_USAGE,
    OneLineParser,
    add_version,
    day_range_error,
    guarded,
    iso_day,
    positive_int,
)
from shared.config import (
    ConfigError,
    NodeConfig,
    find_config,
    load_config,
)

if TYPE_CHECKING:
    from node_agent.report import Report
    from node_agent.scan_credit import CreditOptions


def main(argv: Sequence[str] | None = None) -> int:
    given = list(sys.argv[1:] if argv is None else argv)
    done = fast_command(given)  # `hook`, `statusline`: what the agents call synchronously
    if done is not None:
        return done
    scan_only = given[:1] == ["scan"]  # `scan --help` and its usage errors read the same
    parser = _parser(scan_only)
    args = parser.parse_args(given)
    if args.command is None:
        parser.print_help()
        return 2
    if args.command == "scan":
        return guarded("node-agent scan", lambda: cmd_scan(args, given))
    from node_agent.agent_cli import AGENT_COMMANDS

    handler = {
        "init": cmd_init,
        "install-service": cmd_install_service,
        "run": cmd_run,
        **AGENT_COMMANDS,
    }[args.command]
    return guarded(f"node-agent {args.command}", lambda: handler(args))


def _parser(scan_only: bool = False) -> argparse.ArgumentParser:
    """The command line; with `scan_only`, only the scan subcommand is added."""
    parser = OneLineParser(prog="node-agent", description=__doc__)
    add_version(parser)
    sub = parser.add_subparsers(dest="command")
    scan_p = sub.add_parser(
        "scan",
        help="read local agent logs once and print a cost report",
        description=(
            "Read the logs under the given agent homes (a Claude config dir, a Codex home, a "
            "Gemini home, an OpenCode data dir, a Cursor usage CSV, a directory holding "
            "several of them, or a file or folder inside a home) and print tokens and cost "
            "grouped by --by. With no path: the configured profiles and the agents' default "
            "locations."
        ),
    )
    scan_p.add_argument("paths", nargs="*", type=Path, metavar="PATH")
    scan_p.add_argument(
        "--by",
        action="append",
        default=None,
        metavar="KEYS",
        help=(
            f"group by these keys, comma-separated ({', '.join(GROUP_KEYS)}); default: day; "
            f"or by one outcome alone ({', '.join(OUTCOME_KEYS)}: read from git)"
        ),
    )
    scan_p.add_argument("--tz", default="UTC", help="IANA zone for day/week/month (default UTC)")
    scan_p.add_argument("--since", type=iso_day, help="first day (YYYY-MM-DD, in --tz)")
    scan_p.add_argument("--until", type=iso_day, help="last day (YYYY-MM-DD, in --tz)")
    scan_p.add_argument("--json", action="store_true", help="print one JSON object")
    scan_p.add_argument("--config", type=Path, help="node config file (profiles)")
    scan_p.add_argument(
        "--no-cache",
        action="store_true",
        help="read every file from the start and keep no scan index"
        " (default: $XDG_CACHE_HOME/fleetmeter/scan-index.msgpack)",
    )
    scan_p.add_argument(
        "--jobs",
        type=positive_int,
        default=None,
        help="worker processes (default: one per CPU when there is much to read)",
    )
    scan_p.add_argument(
        "--identity",
        action="append",
        default=[],
        metavar="NAME|EMAIL",
        help="with an outcome --by: an author that commits for the agents (repeatable)",
    )
    scan_p.add_argument(
        "--sdk-credit",
        metavar="USD",
        help="the Agent SDK credit a month of each Claude subscription profile scanned "
        "(default: its plan's in the node config: pro 20, max_5x 100, max_20x 200)",
    )
    scan_p.add_argument(
        "--extra-usage",
        choices=("on", "off"),
        help="whether Agent SDK calls past the credit are billed (on) or refused (off); "
        "unsaid, their part past the credit is counted as estimated",
    )
    if scan_only:
        return parser
    from node_agent.agent_cli import add_agent_commands

    _add_init(sub)
    _add_install_service(sub)
    _add_run(sub)
    add_agent_commands(sub)
    return parser


def _add_init(sub: Any) -> None:
    init_p = sub.add_parser(
        "init",
        help="write or update the node config (and install the node key)",
        description=(
            "Write the node's config file with explaining comments, or update an existing one "
            "in place: its comments and edits are kept and only what is given here changes. "
            "With no --profile, a new file gets a profile per agent home found at the default "
            "places (~/.claude, ~/.codex, ~/.gemini, ~/.local/share/opencode)."
        ),
    )
    init_p.add_argument(
        "--config",
        type=Path,
        help="the file (default: $FLEETMETER_CONFIG, else ~/.config/fleetmeter/node.toml)",
    )
    init_p.add_argument("--node", help="this machine's name in the fleet (default: host name)")
    init_p.add_argument(
        "--hub", metavar="ADDRESS", help="the hub's events address, e.g. tcp://hub.lan:7461"
    )
    init_p.add_argument(
        "--commands", metavar="ADDRESS", help="the hub's commands address (default: port + 1)"
    )
    init_p.add_argument("--state-dir", help="where the outbox lives (default: see the file)")
    init_p.add_argument(
        "--profile",
        action="append",
        default=[],
        metavar="NAME:AGENT:HOME[:BILLING[:PLAN[:ACCOUNT]]]",
        help="add or update a profile (repeatable), e.g. max-a:claude-code:~/.claude:subscription",
    )
    key = init_p.add_mutually_exclusive_group()
    key.add_argument("--key", metavar="HEX", help="the node key from `fleet-hub enroll NODE`")
    key.add_argument(
        "--key-file",
        type=Path,
        metavar="FILE",
        help="read the node key from FILE ('-': standard input; keeps it out of ps and history)",
    )
    init_p.add_argument("--force", action="store_true", help="rewrite the file from scratch")


def _add_run(sub: Any) -> None:
    run_p = sub.add_parser(
        "run",
        help="the daemon: follow every profile's logs and stream them to the hub",
        description=(
            "Follow the configured profiles' logs, keep the outbox, send it to the hub (its "
            "address from [hub] in the config, or found with zeroconf) and answer its pause / "
            "resume / kill commands. Stops cleanly on SIGTERM. Run it with systemd "
            "(`node-agent install-service`)."
        ),
    )
    run_p.add_argument("--config", type=Path, help="node config (default: the usual places)")


def _add_install_service(sub: Any) -> None:
    from node_agent.systemd import UNIT_PATH

    svc = sub.add_parser(
        "install-service",
        help="write the systemd unit that runs `node-agent run`",
        description=(
            f"Write {UNIT_PATH} (Type=notify, watchdog, sandboxed) and print the commands "
            "that enable it."
        ),
    )
    svc.add_argument(
        "--user", help="the user it runs as: the owner of the agents (default: you / SUDO_USER)"
    )
    svc.add_argument("--output", type=Path, default=UNIT_PATH, help="default: %(default)s")
    svc.add_argument("--print", action="store_true", help="print the unit instead of writing it")
    svc.add_argument("--config", type=Path, help="the node config the service reads")


def cmd_run(args: argparse.Namespace) -> int:
    from node_agent.daemon import run  # the daemon's imports are not needed by the other commands

    try:
        config = _load_config(args.config)
    except ConfigError as exc:
        print(f"node-agent run: {exc}", file=sys.stderr)
        return 2
    try:
        return run(config)
    except ConfigError as exc:  # e.g. the node key is missing or readable by others
        print(f"node-agent run: {exc}", file=sys.stderr)
        return 2


def _load_config(path: Path | None) -> NodeConfig:
    if path is not None:
        return load_config(path)
    found = find_config()
    return load_config(found) if found else NodeConfig()


def _zone(name: str) -> tzinfo | None:
    """The IANA zone `name`, or None when there is none by that name."""
    if name == "UTC":
        return UTC  # the default needs no zone database: zoneinfo's import costs start-up time
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


@contextmanager
def _batch_gc() -> Iterator[None]:
    """A scan builds tens of thousands of small objects that live until it ends; the cyclic
    collector would walk them again and again for nothing (about 10 % of a scan's time).
    Collect young objects rarely, and never walk what start-up built (inherited by workers).
    The collector is on meanwhile, even when start-up had it off (`entry.main`). Put back as
    it was afterwards, for a caller that goes on (a test calling `main`)."""
    import gc

    thresholds = gc.get_threshold()
    enabled = gc.isenabled()
    gc.set_threshold(100_000, 50, 1000)
    gc.freeze()
    gc.enable()
    try:
        yield
    finally:
        if not enabled:
            gc.disable()
        gc.unfreeze()
        gc.set_threshold(*thresholds)


def cmd_scan(args: argparse.Namespace, argv: Sequence[str] | None = None) -> int:
    """`argv`: the command line as given, under which a clean answer is kept for the next
    scan (`scan_answer`); None keeps none."""
    import time

    from node_agent.answer_deps import AnswerDeps
    from node_agent.render import render_json, render_text
    from node_agent.report import Query, build_report
    from node_agent.scan_index import default_dir as default_index_dir

    started_ns = time.time_ns()  # before the config and the logs are read
    tz = _zone(args.tz)
    if tz is None:
        print(f"node-agent scan: unknown time zone {args.tz!r}", file=sys.stderr)
        return EXIT_USAGE
    if range_error := day_range_error(args.since, args.until):
        print(f"node-agent scan: {range_error}", file=sys.stderr)
        return EXIT_USAGE
    by = [k.strip() for arg in (args.by or ["day"]) for k in arg.split(",") if k.strip()]
    try:
        config = _load_config(args.config)
        outcome = check_outcome_keys(by)
        if outcome is None:
            check_keys(by)
    except UnknownGroupKeyError as exc:
        print(f"node-agent scan: {exc}; or {OR_AN_OUTCOME}", file=sys.stderr)
        return EXIT_USAGE
    except (ConfigError, OutcomeKeyError) as exc:
        print(f"node-agent scan: {exc}", file=sys.stderr)
        return EXIT_USAGE

    credit = _credit_options(args.sdk_credit, args.extra_usage)
    if isinstance(credit, str):
        print(f"node-agent scan: {credit}", file=sys.stderr)
        return EXIT_USAGE
    keys = ("session",) if outcome else tuple(by)
    query = Query(keys, tz, args.since, args.until, keep_calls=outcome is not None)
    cache = None if args.no_cache else default_index_dir()
    # An answer is kept of a clean scan's report (not of an outcome view's), stat'ed meanwhile.
    keeps = argv is not None and cache is not None and outcome is None
    deps = AnswerDeps(args, started_ns) if keeps else None
    with _batch_gc(), _noticing_stderr() as noticed:
        report = build_report(
            args.paths,
            config,
            query,
            jobs=args.jobs,
            cache_dir=cache,
            credit=credit,
            meanwhile=deps.gather if deps else None,
            held=left_at_exit(),
        )
    for warning in report.warnings:
        print(f"node-agent scan: {warning}", file=sys.stderr)
    if outcome is not None:
        return _print_outcomes(report, outcome, config, args)
    out: bytes | str
    try:
        if args.json:
            import orjson

            out = orjson.dumps(render_json(report), option=orjson.OPT_INDENT_2) + b"\n"
            if sys.stdout is not None:  # None: started without fd 1, as `print` has it
                sys.stdout.buffer.write(out)
        else:
            out = render_text(report) + "\n"
            if sys.stdout is not None:
                sys.stdout.write(out)
    except BrokenPipeError:
        raise  # (`guarded` tells of it)
    except OSError as exc:
        return _unwritten(exc)
    for problem in report.path_problems:
        print(f"node-agent scan: {problem}", file=sys.stderr)
    if report.path_problems:
        return 1
    # (No stdout, None: nothing was printed, so nothing is kept; `entry._leave` tells of it.)
    clean = sys.stdout is not None and not (report.warnings or noticed)
    if deps is not None and argv is not None and clean:
        try:
            sys.stdout.flush()
        except BrokenPipeError:
            raise
        except OSError as exc:
            return _unwritten(exc)
        found = deps.found(report.homes)
        if found is not None:
            from node_agent.scan_answer import keep

            keep(argv, found, out)
    return 0


def _unwritten(exc: OSError) -> int:
    """The scan's output could not be written (a full disk, say): told as the output's, where
    a bare 'No space left on device' could have been the cache's; once (stdout is detached,
    so the last flush at exit does not fail again)."""
    from shared.cli import _detach_stdout

    print(f"node-agent scan: could not write the output: {exc}", file=sys.stderr)
    _detach_stdout()
    return 1


class _Noticed:
    """Whether anything was written to stderr (a logged warning, say): such a scan's answer is
    not kept, since a kept answer prints stdout only."""

    def __init__(self) -> None:
        self.written = False

    def __bool__(self) -> bool:
        return self.written


@contextmanager
def _noticing_stderr() -> Iterator[_Noticed]:
    import io

    noticed = _Noticed()
    real = sys.stderr

    class Noticing(io.TextIOBase):
        def write(self, text: str) -> int:
            noticed.written = noticed.written or bool(text)
            # None: started without fd 2, where a write is lost as `print` loses it
            return len(text) if real is None else real.write(text)

        def flush(self) -> None:
            if real is not None:
                real.flush()

    sys.stderr = cast(TextIO, Noticing())
    try:
        yield noticed
    finally:
        sys.stderr = real


def _credit_options(sdk_credit: str | None, extra_usage: str | None) -> CreditOptions | str:
    """The scan's credit options, or what is wrong with them."""
    from decimal import Decimal

    from node_agent.scan_credit import CreditOptions

    amount = None
    if sdk_credit is not None:
        if not _AMOUNT.match(sdk_credit):
            return f'--sdk-credit must be dollars like "100" or "150.50", not {sdk_credit!r}'
        amount = Decimal(sdk_credit)
    told = None if extra_usage is None else extra_usage == "on"
    return CreditOptions(amount, told)


_AMOUNT: Final = re.compile(r"^\d{1,7}(?:\.\d{1,2})?$")


def _print_outcomes(report: Report, by: str, config: NodeConfig, args: argparse.Namespace) -> int:
    import orjson

    from node_agent.outcomes.view import outcome_view  # git and the forge: only for this view
    from pricing.outcomes import render_outcome_text

    view = outcome_view(report, by, [*config.commit_identities, *args.identity])
    if args.json:
        sys.stdout.buffer.write(orjson.dumps(view, option=orjson.OPT_INDENT_2) + b"\n")
    else:
        print(render_outcome_text(view))
    for problem in report.path_problems:
        print(f"node-agent scan: {problem}", file=sys.stderr)
    return 1 if report.path_problems else 0


def cmd_init(args: argparse.Namespace) -> int:
    # tomlkit and the init module only here: a scan starts faster without them.
    from node_agent.init import InitError, InitRequest, default_homes, parse_profile_spec, run_init
    from node_agent.init import default_path as default_init_path

    try:
        key_hex = args.key
        if args.key_file is not None:
            key_hex = _read_key_source(args.key_file)
        request = InitRequest(
            path=args.config or default_init_path(),
            node=args.node,
            hub_events=args.hub,
            hub_commands=args.commands,
            state_dir=args.state_dir,
            key_hex=key_hex,
            profiles=[parse_profile_spec(spec) for spec in args.profile],
            force=args.force,
        )
        result = run_init(request)
    except (InitError, ConfigError) as exc:
        print(f"node-agent init: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"node-agent init: {exc.filename or ''}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    if result.created:
        print(f"wrote {result.path}")
    elif result.changes:
        print(f"updated {result.path}")
    else:
        print(f"{result.path}: nothing to change")
    for change in result.changes:
        print(f"  {change}")
    if result.key_file is not None:
        print(f"node key written to {result.key_file} (mode 600)")
    if not result.profiles:
        print(
            f"node-agent init: no profile, so the node reads no logs: no agent home at "
            f"{', '.join(default_homes())}; add one with "
            "`node-agent init --profile NAME:AGENT:HOME[:BILLING[:PLAN[:ACCOUNT]]]`",
            file=sys.stderr,
        )
    elif result.created:
        print("next: check the profiles in the file, then `node-agent install-service`")
    return 0


def _read_key_source(source: Path) -> str:
    if str(source) == "-":
        return sys.stdin.readline()
    return source.read_text(encoding="ascii", errors="replace")


def cmd_install_service(args: argparse.Namespace) -> int:
    import getpass
    import pwd

    from node_agent.init import write_atomic
    from node_agent.systemd import render_unit

    user = args.user or os.environ.get("SUDO_USER") or getpass.getuser()
    config = args.config.expanduser().absolute() if args.config else find_config()
    if config is not None:
        load_config(config)  # a unit that points at a broken or missing config would only fail
    try:
        text = render_unit(_node_agent_command(), user, config)
    except ValueError as exc:
        print(f"node-agent install-service: {exc}", file=sys.stderr)
        return 2
    if args.print:
        sys.stdout.write(text)
        return 0
    try:
        pwd.getpwnam(user)
    except KeyError:
        print(f"node-agent install-service: warning: no user {user!r} here", file=sys.stderr)
    output: Path = args.output
    try:
        write_atomic(output, text.encode(), mode=0o644)
    except OSError as exc:
        print(
            f"node-agent install-service: cannot write {output}: {exc.strerror or exc}; "
            "run it with sudo, or use --print / --output FILE",
            file=sys.stderr,
        )
        return 1
    unit = output.stem if output.suffix == ".service" else output.name
    print(f"wrote {output} (runs as {user})")
    print("next, as root:")
    print("  systemctl daemon-reload")
    print(f"  systemctl enable --now {unit}")
    print(f"  systemctl status {unit}        # its status line once it is up")
    print(f"  journalctl -u {unit} -f        # its log")
    print(f"check the sandbox: systemd-analyze security {unit}   (about 2.2 OK expected)")
    print(f"the node key must be in place and readable by {user} (node-agent init --key-file)")
    return 0


def _node_agent_command() -> list[str]:
    """How systemd should start this same installation (not whatever is first on PATH)."""
    from shared.systemd import program_words  # (here: a scan has no use for the unit's rules)

    return program_words("node-agent", "node_agent.cli")


if __name__ == "__main__":
    sys.exit(main())
