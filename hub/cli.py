"""`fleet-hub`: the ops workstation's command.

With no command it opens the dashboard attached to the running hub (`--hub URL --token T`, or
the one the config names), else on an embedded hub (the same core as `serve`, in this
process); `demo` does so on a demo fleet of real node agents and fake agents on loopback.
`init` writes the hub's config and fleet secret; `enroll NODE` prints a node's key; `serve` runs
the hub headless (receiver, store, ledger, commands, zeroconf); `report` prints the fleet's
costs from the hub's store, in the row shape of `node-agent scan --json`.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shlex
import sys
from collections.abc import Callable, Sequence
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson

from hub import attach, cli_fleet, prices_cli
from hub._schema import StoreError
from hub.alerts import cli as alerts_cli
from hub.api_client import ApiFailure, NoHub, running_hub, tls_context
from hub.budgets import cli as budget_cli
from hub.config import (
    check_plaintext,
    default_hub_config_path,
    enroll_key,
    init_hub,
    listen_problem,
    load_hub_config,
)
from hub.outcomes import build_outcome_report
from hub.reconcile import cli as reconcile_cli
from hub.report import build_hub_report
from hub.shutdown import Shutdown
from hub.store import DB_FILE, Store
from pricing.outcome_keys import OR_AN_OUTCOME
from pricing.outcomes import OutcomeKeyError, check_outcome_keys, render_outcome_text
from pricing.rollup import GROUP_KEYS, UnknownGroupKeyError, check_keys
from shared.cli import (
    EXIT_FAILURE,
    EXIT_USAGE,
    OneLineParser,
    add_version,
    day_range_error,
    guarded,
    iso_day,
    positive_float,
    positive_int,
)
from shared.config import ConfigError

if TYPE_CHECKING:
    from hub.api.front import HubFront
    from hub.serve import Hub
    from hub.service import FleetService


log = logging.getLogger(__name__)


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    handlers: dict[str | None, Callable[[argparse.Namespace], int]] = {
        None: cmd_dashboard,
        "demo": cmd_demo,
        "init": cmd_init,
        "enroll": cmd_enroll,
        "serve": cmd_serve,
        "report": cmd_report,
        "token": cli_fleet.cmd_token,
        "nodes": cli_fleet.cmd_nodes,
        "audit": cli_fleet.cmd_audit,
        "install-service": cli_fleet.cmd_install_service,
        "budget": budget_cli.cmd_budget,
        "alerts": alerts_cli.cmd_alerts,
        "reconcile": reconcile_cli.cmd_reconcile,
        "prices": prices_cli.cmd_prices,
    }
    handlers.update(dict.fromkeys(cli_fleet.ACTIONS, cli_fleet.cmd_halt))
    handler = handlers[args.command]
    prog = " ".join(filter(None, ["fleet-hub", args.command]))
    return guarded(prog, lambda: _with_store_hint(prog, handler, args))


def _with_store_hint(
    prog: str, handler: Callable[[argparse.Namespace], int], args: argparse.Namespace
) -> int:
    """A hub database that cannot be opened, or a hub that refused: say which, and what to do."""
    try:
        return handler(args)
    except StoreError as exc:
        print(
            f"{prog}: {exc}; move it aside to start an empty store, or restore a backup",
            file=sys.stderr,
        )
        return EXIT_FAILURE
    except ApiFailure as exc:
        print(f"{prog}: the hub says: {exc.message}", file=sys.stderr)
        return EXIT_USAGE if exc.status in (400, 401, 403, 404, 422) else EXIT_FAILURE
    except cli_fleet.NoStore as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except NoHub as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return EXIT_FAILURE


def _parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="fleet-hub", description=__doc__)
    add_version(parser)
    parser.add_argument(
        "--config",
        type=Path,
        default=default_hub_config_path(),
        help="hub config for the dashboard (default: %(default)s)",
    )
    parser.add_argument(
        "--hub",
        metavar="URL",
        help="attach the dashboard to the hub whose API answers at URL "
        "(default: the one the config names, when it answers)",
    )
    parser.add_argument(
        "--token",
        dest="hub_token",
        metavar="T",
        help="the dashboard's API token (default: $FLEETMETER_TOKEN, admin.token)",
    )
    sub = parser.add_subparsers(dest="command")

    def with_config(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument(
            "--config",
            type=Path,
            help="hub config (default: %(default)s)",
            default=default_hub_config_path(),
        )
        return p

    demo_p = sub.add_parser("demo", help="the dashboard on a demo fleet (all on loopback)")
    demo_p.add_argument(
        "--machines", type=positive_int, default=3, help="node agents, 1 to 99 (default: 3)"
    )
    demo_p.add_argument(
        "--dir", type=Path, help="keep the demo's files here (default: a temporary dir)"
    )
    demo_p.add_argument(
        "--pace",
        type=positive_float,
        default=1.0,
        help="scale the agents' pauses (0.5: twice as busy)",
    )

    init_p = with_config(sub.add_parser("init", help="write the hub config and fleet secret"))
    init_p.add_argument("--events", help="listen address for node batches")
    init_p.add_argument("--commands", help="listen address for commands")
    init_p.add_argument("--data-dir", type=Path, help="where the store lives")
    init_p.add_argument("--no-advertise", action="store_true", help="do not use zeroconf")
    init_p.add_argument(
        "--allow-plaintext",
        action="store_true",
        help="listen on the network without TLS (a network you trust: see README, The wire)",
    )
    init_p.add_argument("--api", help="HOST:PORT of the HTTP API (default: 127.0.0.1:7463)")
    init_p.add_argument(
        "--force", action="store_true", help="rewrite the config (the secret is always kept)"
    )

    enroll_p = with_config(sub.add_parser("enroll", help="print the key of a node"))
    enroll_p.add_argument("node", help="the node's name (its `node` in node.toml)")

    with_config(
        sub.add_parser("serve", help="run the hub and its HTTP API until SIGTERM (the service)")
    )

    report_p = with_config(sub.add_parser("report", help="the fleet's costs from the store"))
    report_p.add_argument(
        "--by",
        action="append",
        help=(
            f"group keys, comma-separated: {', '.join(GROUP_KEYS)} (default: machine); "
            "or one outcome alone: commit, branch, pr, repo"
        ),
    )
    report_p.add_argument("--tz", default="UTC", help="IANA zone for days (default: UTC)")
    report_p.add_argument("--since", type=iso_day, help="first day, YYYY-MM-DD")
    report_p.add_argument("--until", type=iso_day, help="last day, YYYY-MM-DD")
    report_p.add_argument("--json", action="store_true", help="print JSON")
    report_p.add_argument("--token", help="API token (default: $FLEETMETER_TOKEN, admin.token)")
    cli_fleet.add_parsers(sub, with_config)
    budget_cli.add_parsers(sub, with_config)
    alerts_cli.add_parser(sub, with_config)
    reconcile_cli.add_parser(sub, with_config)
    prices_cli.add_parser(sub, with_config)
    return parser


def cmd_dashboard(args: argparse.Namespace) -> int:
    """The TUI attached to the running hub (`--hub`, or the config's when its API answers),
    else on an embedded hub: receiver, store, ledger and commands in this process."""
    from hub.api.front import HubFront  # the web stack: only for a hub in this process
    from hub.serve import Hub
    from hub.tui import run_dashboard  # Textual is loaded only for the dashboard

    if args.hub is not None:
        url = attach.hub_url(args.hub)
        token = attach.hub_token(args.hub_token, args.config)
        _log_to_file(_dashboard_log())
        return attach.run_attached(url, token)
    if not args.config.exists():
        print(
            f"fleet-hub: no hub config at {args.config}: run `fleet-hub init` first "
            "(or `fleet-hub demo` to try the dashboard on a demo fleet)",
            file=sys.stderr,
        )
        return 2
    config = load_hub_config(args.config)
    client = running_hub(config, args.hub_token)  # no token for a hub that answers: exit 2
    if client is not None and client.token:
        _log_to_file(_dashboard_log())
        return attach.run_attached(client.base, client.token, tls_context(config) or True)
    _log_to_file(config.data_dir / "fleet-hub.log")
    hub = Hub(config)
    front = HubFront(hub)
    service = _start(hub, "fleet-hub")
    if service is None:
        return EXIT_FAILURE

    def stop() -> None:
        front.stop()
        hub.stop()

    with Shutdown(stop) as shutdown:  # stops them after a quit, a signal, a lost terminal
        _serve_beside(front, service)
        run_dashboard(service, shutdown=shutdown)
    return 0


def _serve_beside(front: HubFront, service: FleetService) -> None:
    """The embedded hub serves its API and delivers its alerts as `serve` does, so that other
    dashboards and the CLI attach to it; a taken API port costs only that (logged)."""
    try:
        front.start(service)
    except OSError as exc:
        log.warning("the embedded hub serves no API: %s", exc)


def cmd_demo(args: argparse.Namespace) -> int:
    import tempfile

    from hub.demo import DemoFleet
    from hub.tui import run_dashboard

    with contextlib.ExitStack() as stack:
        workdir = args.dir or Path(
            stack.enter_context(tempfile.TemporaryDirectory(prefix="fleetmeter-demo-"))
        )
        try:
            fleet = DemoFleet(workdir, machines=args.machines, pace=args.pace)
        except ValueError as exc:  # e.g. more machines than the demo can name
            print(f"fleet-hub demo: {exc}", file=sys.stderr)
            return EXIT_USAGE
        try:
            workdir.mkdir(parents=True, exist_ok=True)
            _log_to_file(workdir / "fleet-hub.log")
        except OSError as exc:
            print(
                f"fleet-hub demo: cannot use --dir {workdir}: {exc.strerror or exc}",
                file=sys.stderr,
            )
            return EXIT_FAILURE
        print(
            f"fleet-hub demo: starting {args.machines} node agents and their agents in {workdir}",
            flush=True,
        )
        # Ends the fleet after a quit, on SIGTERM / SIGHUP / SIGINT or a lost terminal, while
        # it starts as well (see hub.shutdown). Not the fleet's own __enter__: that would start
        # it outside the try.
        shutdown = stack.enter_context(Shutdown(fleet.stop))
        try:
            service = fleet.start()
        except (OSError, RuntimeError, ConfigError) as exc:
            print(f"fleet-hub demo: could not start the demo fleet: {exc}", file=sys.stderr)
            return 1
        run_dashboard(service, shutdown=shutdown)
    return 0


def _start(hub: Hub, prog: str) -> FleetService | None:
    """The started hub's service, or None after saying why it could not listen."""
    from pynng.exceptions import AddressInUse, NNGException  # not needed by every command

    from hub.serve import DataDirError

    try:
        return hub.start()
    except DataDirError as exc:
        hub.stop()
        print(f"{prog}: {exc}", file=sys.stderr)
        return None
    except (OSError, NNGException) as exc:
        hub.stop()
        config = hub.config
        # Only a taken address hints at another hub; a bad ipc:// path or host does not.
        other = "; is another fleet-hub running?" if isinstance(exc, AddressInUse) else ""
        print(
            f"{prog}: cannot listen on {config.events} and {config.commands}: {exc}{other} "
            f"(the addresses are in {config.path})",
            file=sys.stderr,
        )
        return None


def _dashboard_log() -> Path:
    """An attached dashboard's log: the hub's data dir may not be this user's to write."""
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "fleetmeter" / "fleet-hub-dashboard.log"


def _log_to_file(path: Path) -> None:
    """The dashboard owns the terminal: the hub's log goes to a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(
        level=logging.INFO,
        filename=path,
        format="%(asctime)s hub %(levelname)s %(name)s %(message)s",
    )
    # httpx says every request at INFO: an attached dashboard asks every few seconds (the
    # budgets, the alerts, the Recon tab, each change's mirror), some 50,000 lines a day
    logging.getLogger("httpx").setLevel(logging.WARNING)


def cmd_init(args: argparse.Namespace) -> int:
    overrides: dict[str, object] = {}
    if args.events:
        overrides["events"] = args.events
    if args.commands:
        overrides["commands"] = args.commands
    if args.data_dir:
        # a relative data_dir is read relative to the config's folder, as the hub reads it
        if problem := _unusable_dir(args.config.parent / args.data_dir):
            print(
                f"fleet-hub init: cannot use --data-dir {args.data_dir}: {problem}", file=sys.stderr
            )
            return EXIT_USAGE
        overrides["data_dir"] = str(args.data_dir)
    if args.no_advertise:
        overrides["advertise"] = False
    if args.allow_plaintext:
        overrides["allow_plaintext"] = True
    if args.api:
        if problem := listen_problem(args.api):
            print(f"fleet-hub init: --api {args.api}: {problem}", file=sys.stderr)
            return EXIT_USAGE
        overrides["api"] = {"listen": args.api}
    config_path, secret_path = init_hub(args.config, force=args.force, overrides=overrides)
    print(f"wrote {config_path}")
    print(f"fleet secret in {secret_path} (mode 600: keep it that way)")
    try:
        check_plaintext(load_hub_config(config_path))
    except ConfigError:
        # Said now rather than when the hub first refuses to start.
        print(
            "note: the hub listens on the network without TLS and will refuse to start: give it "
            "tls+tcp:// addresses and tls_cert_key_file, or run `fleet-hub init "
            "--allow-plaintext` on a network you trust"
        )
    print("next: `fleet-hub enroll NODE` for each machine, then on that machine")
    print("      `node-agent init --key HEX` and `node-agent install-service`")
    return 0


def _unusable_dir(path: Path) -> str | None:
    """Why the hub could not keep its store in `path` (made here if missing), or None."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return exc.strerror or str(exc)
    if not os.access(path, os.W_OK | os.X_OK):
        return "not writable by this user"
    return None


def cmd_enroll(args: argparse.Namespace) -> int:
    config = load_hub_config(args.config)
    key = enroll_key(config, args.node)
    print(key)
    node = shlex.quote(args.node)
    print(f"# on {node}: node-agent init --node {node} --key {key}", file=sys.stderr)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from hub.api.run import serve  # the web stack is loaded by the service only

    config = load_hub_config(args.config)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s hub %(levelname)s %(message)s")
    return serve(config, _start)


def cmd_report(args: argparse.Namespace) -> int:
    try:
        tz = ZoneInfo(args.tz)
    except (ZoneInfoNotFoundError, ValueError):
        print(f"fleet-hub report: unknown time zone {args.tz!r}", file=sys.stderr)
        return 2
    by = [k.strip() for arg in (args.by or ["machine"]) for k in arg.split(",") if k.strip()]
    try:
        outcome = check_outcome_keys(by)
        if outcome is None:
            check_keys(by)
    except UnknownGroupKeyError as exc:
        print(f"fleet-hub report: {exc}; or {OR_AN_OUTCOME}", file=sys.stderr)
        return EXIT_USAGE
    except OutcomeKeyError as exc:
        print(f"fleet-hub report: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if problem := day_range_error(args.since, args.until):
        print(f"fleet-hub report: {problem}", file=sys.stderr)
        return EXIT_USAGE
    config = load_hub_config(args.config)
    client = running_hub(config, args.token)
    if client is not None:
        report = client.get(
            "/api/v1/report", by=",".join(by), tz=args.tz, since=args.since, until=args.until
        )
        return _print_report(report, by, args.json)
    if not (config.data_dir / DB_FILE).is_file():
        print(
            f"fleet-hub report: no store at {config.data_dir / DB_FILE}: the hub has stored "
            "nothing yet; start it with `fleet-hub serve` (or `fleet-hub`) and let nodes report",
            file=sys.stderr,
        )
        return EXIT_FAILURE
    with Store.in_dir(config.data_dir) as store:
        if outcome is not None:  # calls priced when stored, put on their sessions' outcomes
            report = build_outcome_report(store, outcome, tz, args.since, args.until)
            return _print_report(report, by, args.json)
        # from the roll-ups, priced when stored: no price tables to load (a third of a second)
        report = build_hub_report(store, by=by, tz=tz, since=args.since, until=args.until)
    return _print_report(report, by, args.json)


def _print_report(report: dict[str, Any], by: list[str], as_json: bool) -> int:
    if as_json:
        sys.stdout.buffer.write(orjson.dumps(report, option=orjson.OPT_INDENT_2) + b"\n")
    elif "view" in report:  # an outcome view (--by commit|branch|pr|repo)
        print(render_outcome_text(report))
    else:
        print(_text(report, by))
    return 0


def _text(report: dict[str, Any], by: list[str]) -> str:
    header = [*by, "calls", "api-equiv $", "metered $", "subscr. $", "estimated $", "unknown"]
    lines = [header]
    for row in [*report["rows"], {**report["total"], **{k: "TOTAL" for k in by[:1]}}]:
        cost = row["cost"]
        unknown = f"{row['unknown_calls']} calls" if row["unknown_calls"] else "-"
        lines.append(
            [
                *(str(row.get(k) or "-") for k in by),
                str(row["calls"]),
                *(
                    _money(cost[c])
                    for c in ("api_equivalent", "metered", "subscription_included", "estimated")
                ),
                unknown,
            ]
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join(
        "  ".join(
            cell.ljust(w) if i < len(by) else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(line, widths, strict=True))
        )
        for line in lines
    )


def _money(value: str | None) -> str:
    return "unknown" if value is None else f"{Decimal(value):,.2f}"


if __name__ == "__main__":
    sys.exit(main())
