"""`fleet-hub` commands that talk to a running hub: `token`, `nodes`, `audit`, `pause`,
`resume`, `kill`, and `install-service` for the hub itself.

`nodes` and `audit` read through the API when a hub serves the config (see `hub.api_client`)
and from the store directly when none does; `pause` / `resume` / `kill` need a hub (it owns
the command endpoint). `token` edits the tokens file beside the config, which a running hub
reads again on its next request.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from hub.api.views import audit as audit_rows
from hub.api_client import running_hub
from hub.config import HubConfig, load_hub_config
from hub.model import NodeState
from hub.store import DB_FILE, Store
from hub.tokens import Role, TokenBook, tokens_path
from shared.cli import EXIT_FAILURE, EXIT_USAGE, positive_int

ACTIONS = ("pause", "resume", "kill")


def add_parsers(sub: Any, with_config: Any) -> None:
    token_p = sub.add_parser("token", help="API tokens: create, list, revoke")
    token_sub = token_p.add_subparsers(dest="token_command", required=True)
    create = token_sub.add_parser("create", help="a new token, printed once")
    create.add_argument("name")
    create.add_argument("--role", required=True, choices=[r.value for r in Role])
    for what in ("session", "profile", "machine"):
        create.add_argument(f"--{what}", help=f"bind an agent token to this {what}")
    token_sub.add_parser("list", help="names, roles and bindings (never the tokens)").add_argument(
        "--json", action="store_true"
    )
    token_sub.add_parser("revoke", help="delete a token").add_argument("name")
    for p in token_sub.choices.values():
        with_config(p)

    nodes_p = with_config(sub.add_parser("nodes", help="nodes: state, last seen, version"))
    _client_args(nodes_p)
    audit_p = with_config(sub.add_parser("audit", help="who did what, when, with what result"))
    _client_args(audit_p)
    audit_p.add_argument("--since", type=_when, help="YYYY-MM-DD[THH:MM[:SS]] (UTC) or epoch")
    audit_p.add_argument("--limit", type=positive_int, default=100, help="default: 100")
    for action in ACTIONS:
        p = with_config(sub.add_parser(action, help=f"{action} an agent's process tree"))
        p.add_argument("machine", help="the node's name")
        p.add_argument("pid", type=positive_int)
        p.add_argument(
            "--create-time",
            type=float,
            help="the process's start time (default: the one its node reported for PID)",
        )
        p.add_argument("--token", help=f"API token (default: $FLEETMETER_TOKEN, {_ADMIN})")

    svc = with_config(sub.add_parser("install-service", help="write the hub's systemd unit"))
    svc.add_argument("--user", help="run as this user (a system service; default: you)")
    svc.add_argument(
        "--user-unit", action="store_true", help="a user service (systemctl --user) instead"
    )
    svc.add_argument("--output", type=Path, help="where to write it (default: by kind)")
    svc.add_argument("--print", action="store_true", help="print the unit instead")


_ADMIN = "the admin.token beside the config"


def _client_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--token", help=f"API token (default: $FLEETMETER_TOKEN, {_ADMIN})")


def _when(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a time: YYYY-MM-DD[THH:MM[:SS]] or epoch seconds"
        ) from exc
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


# -- token --------------------------------------------------------------------------------


def cmd_token(args: argparse.Namespace) -> int:
    load_hub_config(args.config)  # tokens belong beside a hub's config: refuse a wrong path
    book = TokenBook(tokens_path(args.config))
    if args.token_command == "create":
        token = book.create(
            args.name,
            Role(args.role),
            session=args.session,
            profile=args.profile,
            machine=args.machine,
        )
        print(f"token {args.name} ({args.role}); shown only now, keep it safe: {token}")
        return 0
    if args.token_command == "revoke":
        if not book.revoke(args.name):
            print(f"fleet-hub token revoke: no token named {args.name!r}", file=sys.stderr)
            return EXIT_FAILURE
        print(f"revoked {args.name}")
        return 0
    records = book.records()
    if args.json:
        rows = [
            {
                "name": r.name,
                "role": r.role.value,
                "created": r.created,
                "session": r.session,
                "profile": r.profile,
                "machine": r.machine,
            }
            for r in records
        ]
        sys.stdout.buffer.write(orjson.dumps(rows, option=orjson.OPT_INDENT_2) + b"\n")
        return 0
    for r in records:
        bound = ", ".join(
            f"{k} {v}"
            for k, v in (("machine", r.machine), ("profile", r.profile), ("session", r.session))
            if v
        )
        print(
            f"{r.name}  {r.role.value}  created {_stamp(r.created)}{'  ' + bound if bound else ''}"
        )
    if not records:
        print("no tokens (fleet-hub token create NAME --role viewer)")
    return 0


# -- nodes and audit ------------------------------------------------------------------------


def cmd_nodes(args: argparse.Namespace) -> int:
    config = load_hub_config(args.config)
    client = running_hub(config, args.token)
    if client is not None:
        rows = client.get("/api/v1/nodes")
    else:
        with _store(config) as store:
            now = time.time()
            rows = [
                {
                    "machine": r.node,
                    "state": r.state(now, config.stale_after).value,
                    "last_seen": r.last_seen,
                    "version": r.version,
                    "backlog": None,  # only a running hub hears the nodes' hellos
                    "reader": None,
                }
                for r in store.nodes()
            ]
    if args.json:
        return _json(rows)
    now = time.time()
    print(
        _table(
            ["machine", "state", "last seen", "version", "backlog"],
            [
                [
                    row["machine"],
                    row["state"],
                    _ago(now, row["last_seen"]),
                    row["version"] or "-",
                    "-" if row["backlog"] is None else str(row["backlog"]),
                ]
                for row in rows
            ],
        )
    )
    online = sum(row["state"] == NodeState.ONLINE for row in rows)
    print(f"{online}/{len(rows)} online" + ("" if client else " (from the store: no hub serving)"))
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    config = load_hub_config(args.config)
    client = running_hub(config, args.token)
    if client is not None:
        rows = client.get("/api/v1/audit", limit=args.limit, since=args.since)["rows"]
    else:
        with _store(config) as store:
            records = store.audit_log(args.limit)
        rows = audit_rows(r for r in records if args.since is None or r.ts >= args.since)
    if args.json:
        return _json(rows)
    print(
        _table(
            ["when", "who", "action", "target", "result"],
            [[_stamp(r["when"]), r["who"], r["action"], r["target"], r["result"]] for r in rows],
        )
    )
    return 0


def _store(config: HubConfig) -> Store:
    path = config.data_dir / DB_FILE
    if not path.is_file():
        raise NoStore(
            f"no hub serves this config and there is no store at {path} yet: "
            "start the hub with `fleet-hub serve` (or `systemctl start fleet-hub`)"
        )
    return Store.in_dir(config.data_dir)


class NoStore(Exception):
    """Neither a running hub nor a store to read: a runtime state, not bad usage (exit 1)."""


# -- commands ------------------------------------------------------------------------------


def cmd_halt(args: argparse.Namespace) -> int:
    prog = f"fleet-hub {args.command}"
    config = load_hub_config(args.config)
    client = running_hub(config, args.token)
    if client is None:
        print(
            f"{prog}: no hub serves at this config ([api] listen {config.api_listen} in "
            f"{config.path}): commands go through the running hub; start it with "
            "`fleet-hub serve` (or `systemctl start fleet-hub`)",
            file=sys.stderr,
        )
        return EXIT_FAILURE
    body: dict[str, Any] = {"machine": args.machine, "pid": args.pid}
    if args.create_time is not None:
        body["create_time"] = args.create_time
    result = client.post(f"/api/v1/commands/{args.command}", body)
    detail = f" ({result['detail']})" if result["detail"] else ""
    print(f"{args.command} pid {args.pid} on {args.machine}: {result['outcome']}{detail}")
    return 0 if result["ok"] else EXIT_FAILURE


# -- install-service --------------------------------------------------------------------------


def cmd_install_service(args: argparse.Namespace) -> int:
    import getpass

    from hub.unit import SYSTEM_UNIT_PATH, render_hub_unit, user_unit_path
    from shared.systemd import program_words

    config_path = args.config.expanduser().absolute()
    config = load_hub_config(config_path)  # a unit that points at a broken config only fails
    user = None if args.user_unit else args.user or os.environ.get("SUDO_USER") or getpass.getuser()
    try:
        text = render_hub_unit(
            program_words("fleet-hub", "hub.cli"), config_path, config.data_dir.absolute(), user
        )
    except ValueError as exc:
        print(f"fleet-hub install-service: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.print:
        sys.stdout.write(text)
        return 0
    output: Path = args.output or (user_unit_path() if args.user_unit else SYSTEM_UNIT_PATH)
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text, encoding="utf-8")
    except OSError as exc:
        print(
            f"fleet-hub install-service: cannot write {output}: {exc.strerror or exc}; run it "
            "with sudo, use --user-unit for a user service, or --print / --output FILE",
            file=sys.stderr,
        )
        return EXIT_FAILURE
    ctl = "systemctl --user" if args.user_unit else "systemctl"
    print(f"wrote {output}" + (f" (runs as {user})" if user else " (a user service)"))
    print(f"next{'' if args.user_unit else ', as root'}:")
    print(f"  {ctl} daemon-reload")
    print(f"  {ctl} enable --now fleet-hub")
    print(f"  {ctl} status fleet-hub")
    if args.user_unit:
        print("  loginctl enable-linger $USER   # to run while you are logged out")
    return 0


# -- output --------------------------------------------------------------------------------


def _json(rows: object) -> int:
    sys.stdout.buffer.write(orjson.dumps(rows, option=orjson.OPT_INDENT_2) + b"\n")
    return 0


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = [header, *rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in lines
    )


def _stamp(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _ago(now: float, ts: float | None) -> str:
    return "never" if ts is None else f"{max(0, now - ts):.0f}s ago"
