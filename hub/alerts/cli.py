"""`fleet-hub alerts`: list alerts and their deliveries, acknowledge, silence, retry dead
letters, raise a test alert. Through the API when a hub serves the config (the token's name is
who); from the store directly when none does (then `--who`, default: you), except `test`,
which needs the hub that delivers."""

from __future__ import annotations

import argparse
import getpass
import re
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import orjson

from hub.alerts.match import kind_problem, scope_problem
from hub.alerts.outbox import ALERT_STATES, DELIVERY_STATES, Outbox
from hub.alerts.views import alert_row, silence_row
from hub.api_client import HubClient, running_hub
from hub.budgets.cli import parse_until
from hub.config import HubConfig, load_hub_config
from hub.findings import Severity
from hub.store import DB_FILE
from shared.cli import EXIT_FAILURE, EXIT_USAGE, positive_int

API: Final = "/api/v1/alerts"
_UNITS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_TOKEN_HELP: Final = "API token (default: $FLEETMETER_TOKEN, the admin.token beside the config)"
LATEST: Final = 2.0**40  # the API's bound on an ack's end


def add_parser(sub: Any, with_config: Any) -> None:
    alerts = with_config(sub.add_parser("alerts", help="alerts: list, ack, silence, retry, test"))
    alerts.add_argument("--json", action="store_true", help="print JSON")
    alerts.add_argument(
        "--state",
        choices=sorted(set(ALERT_STATES) | set(DELIVERY_STATES)),
        help="only alerts in this state or with a delivery in it (dead: the dead letters)",
    )
    alerts.add_argument("--limit", type=positive_int, default=100, help="default: 100")
    alerts.add_argument("--token", help=_TOKEN_HELP)
    acts = alerts.add_subparsers(dest="alerts_command")

    def act(name: str, help: str) -> argparse.ArgumentParser:
        # SUPPRESS: given before the action (`alerts --config F ack ID`), they are kept
        p: argparse.ArgumentParser = acts.add_parser(name, help=help)
        p.add_argument("--config", type=Path, default=argparse.SUPPRESS, help="hub config")
        p.add_argument("--token", default=argparse.SUPPRESS, help=_TOKEN_HELP)
        return p

    ack = act("ack", "acknowledge an alert")
    ack.add_argument("id", help="the alert's id (as listed)")
    ack.add_argument(
        "--until",
        type=parse_until,
        help="+2h, +90m, +1d or a time (ISO, epoch): the ack lapses then (default: never)",
    )
    ack.add_argument("--who", help="without a running hub: who (default: you)")
    silence = act("silence", "hold the delivery of matching alerts for a while")
    silence.add_argument("--scope", default="*", help="e.g. machine=spark02 (default: *)")
    silence.add_argument("--kind", default="*", help="e.g. cache_* (default: *)")
    silence.add_argument(
        "--for", dest="duration", type=_duration, required=True, help="30m, 2h, 1d"
    )
    silence.add_argument("--why", required=True, help="the reason, for whoever reads it later")
    silence.add_argument("--who", help="without a running hub: who (default: you)")
    unsilence = act("unsilence", "end a silence now")
    unsilence.add_argument("silence_id", type=positive_int, help="its number (as listed)")
    retry = act("retry", "send dead deliveries again (same webhook-id)")
    target = retry.add_mutually_exclusive_group(required=True)
    target.add_argument("id", nargs="?", help="one alert's id")
    target.add_argument("--all", action="store_true", help="every dead letter")
    test = act("test", "raise a test alert through the sinks (needs the running hub)")
    test.add_argument("--severity", choices=[s.value for s in Severity], default="info")
    test.add_argument("--scope", default="fleet", help="default: fleet")
    test.add_argument("--text", help="what it says")


def _duration(text: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([smhd])", text.strip())
    if not match or not 0 < float(match[1]) * _UNITS[match[2]] <= 366 * 86400:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration such as 90s, 30m, 2h or 1d")
    return float(match[1]) * _UNITS[match[2]]


def cmd_alerts(args: argparse.Namespace) -> int:
    prog = "fleet-hub alerts" + (f" {args.alerts_command}" if args.alerts_command else "")
    for pattern, check in (
        (getattr(args, "scope", None), scope_problem),
        (getattr(args, "kind", None), kind_problem),
    ):
        if pattern is not None and (problem := check(pattern)):
            print(f"{prog}: {problem}", file=sys.stderr)
            return EXIT_USAGE
    until = getattr(args, "until", None)
    if until is not None and not time.time() < until < LATEST:
        print(f"{prog}: --until: a time in the future (e.g. +2h, +1d, 2026-12-31T18:00)",
              file=sys.stderr)  # fmt: skip
        return EXIT_USAGE
    config = load_hub_config(args.config)
    client = running_hub(config, args.token)
    if client is not None:
        return _through_api(client, args)
    if args.alerts_command == "test":
        print(
            f"{prog}: no hub serves this config ([api] listen {config.api_listen}): a test alert "
            "needs the hub that delivers it; start it with `fleet-hub serve`",
            file=sys.stderr,
        )
        return EXIT_FAILURE
    outbox = _outbox(config)
    try:
        return _on_store(outbox, args, prog)
    finally:
        outbox.close()


def _through_api(client: HubClient, args: argparse.Namespace) -> int:
    command = args.alerts_command
    if command is None:
        page = client.get(API, state=args.state, limit=args.limit)
        return _show(page["alerts"], page["silences"], args.json, served=True)
    if command == "ack":
        return _said(client.post(f"{API}/ack", {"id": args.id, "until": args.until}))
    if command == "silence":
        body = {
            "scope": args.scope,
            "kind": args.kind,
            "minutes": args.duration / 60,
            "why": args.why,
        }
        return _silenced(client.post(f"{API}/silences", body))
    if command == "unsilence":
        client.delete(f"{API}/silences/{args.silence_id}")
        print(f"silence #{args.silence_id} ended")
        return 0
    if command == "retry":
        body = {"all": True} if args.all else {"id": args.id}
        return _retried(client.post(f"{API}/retry", body)["retried"])
    row = client.post(
        f"{API}/test", {"severity": args.severity, "scope": args.scope, "text": args.text}
    )
    sinks = ", ".join(d["sink"] for d in row["deliveries"]) or "no sink routes it"
    print(f"raised test alert {row['id']} ({row['severity']}, {row['scope']}): {sinks}")
    return 0


def _on_store(outbox: Outbox, args: argparse.Namespace, prog: str) -> int:
    command = args.alerts_command
    who = getattr(args, "who", None) or getpass.getuser()
    if command is None:
        rows = [alert_row(r) for r in outbox.alerts(args.limit, args.state)]
        return _show(rows, [silence_row(s) for s in outbox.silences()], args.json, served=False)
    if command == "ack":
        record = outbox.alert(args.id) and outbox.ack(args.id, who, args.until)
        if record is None:
            print(f"{prog}: no alert {args.id!r} (see fleet-hub alerts)", file=sys.stderr)
            return EXIT_USAGE
        return _said(alert_row(record))
    if command == "silence":
        until = time.time() + args.duration
        return _silenced(silence_row(outbox.silence(args.scope, args.kind, until, who, args.why)))
    if command == "unsilence":
        if not outbox.unsilence(args.silence_id):
            print(f"{prog}: no silence #{args.silence_id} in force", file=sys.stderr)
            return EXIT_USAGE
        print(f"silence #{args.silence_id} ended")
        return 0
    if not args.all and outbox.alert(args.id) is None:
        print(f"{prog}: no alert {args.id!r} (see fleet-hub alerts)", file=sys.stderr)
        return EXIT_USAGE
    return _retried(outbox.retry(None if args.all else args.id))


def _outbox(config: HubConfig) -> Outbox:
    from hub.cli_fleet import _store  # the store, or why there is none

    _store(config).close()  # opens (and checks, or migrates) it before the alert tables join
    return Outbox(config.data_dir / DB_FILE, config.alerts)


def _said(row: dict[str, Any]) -> int:
    print(f"{row['id']}: {ack_text(row['acked'])}")
    return 0


def ack_text(acked: dict[str, Any]) -> str:
    """ "acknowledged by ann at 2026-12-05 18:00:00 until 2026-12-05 20:00:00 UTC"."""
    text = f"acknowledged by {acked['who']} at {_stamp(acked['when'])}"
    if acked.get("until") is None:
        return text + " UTC"
    return text + f" {'lapsed' if acked.get('lapsed') else 'until'} {_stamp(acked['until'])} UTC"


def _silenced(row: dict[str, Any]) -> int:
    print(_silence_line(row))
    return 0


def _silence_line(row: dict[str, Any]) -> str:
    return (
        f"silence #{row['id']}: scope {row['scope']}, kind {row['kind']}, until "
        f"{_stamp(row['until'])} ({row['who']}: {row['why']})"
    )


def _retried(count: int) -> int:
    print(f"{count} deliver{'y' if count == 1 else 'ies'} queued again")
    return 0


def _show(
    alerts: list[dict[str, Any]], silences: list[dict[str, Any]], as_json: bool, *, served: bool
) -> int:
    if as_json:
        sys.stdout.buffer.write(
            orjson.dumps({"alerts": alerts, "silences": silences}, option=orjson.OPT_INDENT_2)
            + b"\n"
        )
        return 0
    for row in alerts:
        deliveries = ", ".join(
            f"{d['sink']} {d['state']}"
            + (
                f" ({d['attempts']} tries: {d['last_result']})"
                if d["state"] != "delivered" and d["attempts"]
                else ""
            )
            for d in row["deliveries"]
        )
        print(
            f"{_stamp(row['raised'])}  {row['state']:<9}  {row['severity']:<8}  {row['kind']}  "
            f"{row['scope']}  {row['id']}\n    {row['text']}"
            + (f"\n    {deliveries}" if deliveries else "")
            + (f"\n    {ack_text(row['acked'])}" if row["acked"] else "")
        )
    for silence in silences:
        print(_silence_line(silence))
    if not alerts:
        print("no alerts" + ("" if served else " (from the store: no hub serving)"))
    return 0


def _stamp(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")
