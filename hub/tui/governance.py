"""The Budgets and Alerts tabs' keys and their small forms.

Every change goes through `hub.governance`'s backend: the embedded hub's governor and outbox
or the attached hub's API, the code paths of `fleet-hub budget ...` / `fleet-hub alerts ...`.
A form checks what it can with the same parsers before it closes (a bad value is told on the
form, which stays open); the hub's own refusal is told as a notification.
"""

from __future__ import annotations

import time
from argparse import ArgumentTypeError
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, Final

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static

from hub.alerts.match import kind_problem, scope_problem
from hub.budgets.cli import parse_until
from hub.budgets.model import Basis, BudgetError, parse_budget, parse_limit
from hub.governance import Governance, GovernanceError
from hub.governance_rows import alert_lines, budget_lines
from hub.tui.screens import ConfirmScreen

if TYPE_CHECKING:
    from hub.tui.app import FleetApp

LATEST: Final = 2.0**40  # the API's bound on an override's end
BUDGET_FIELDS: Final = (
    ("name", "name", "spark02-day"),
    ("scope", "scope", "KIND=VALUE[,KIND=VALUE] or fleet"),
    ("period", "period", "session, hour, day, week, month, or 5h"),
    ("basis", "basis", "paid, api or quota"),
    ("limit", "limit", "dollars (paid, api) or percent (quota)"),
    ("action", "action", "alert, pause or kill"),
)
FORM_KEYS: Final = tuple(k for k, _, _ in BUDGET_FIELDS)
KEPT_KEYS: Final = ("thresholds", "next_period", "tz", "forecast_minutes", "on_unverified")
OVERRIDE_FIELDS: Final = (
    ("limit", "limit", "the raised limit; empty: lift the budget"),
    ("until", "until", "+2h, +90m, +1d, or a time (ISO)"),
    ("why", "why", "kept in the audit log"),
)
ACK_FIELDS: Final = (("until", "until", "empty: for good; +2h, +1d, or a time (ISO)"),)
SILENCE_FIELDS: Final = (
    ("scope", "scope", "e.g. machine=spark02, or *"),
    ("kind", "kind", "e.g. cache_*, or *"),
    ("until", "for", "+2h, +90m, +1d, or a time (ISO)"),
    ("why", "why", "kept with the silence"),
)


@dataclass(frozen=True, slots=True)
class Field:
    key: str
    label: str
    hint: str
    value: str = ""
    locked: bool = False  # shown, not editable (an edited budget's name)


class FormScreen(ModalScreen[dict[str, str] | None]):
    """A few labelled inputs; enter moves on to the next empty one (saves when none is left),
    escape cancels. `check` returns what is wrong with the values (the form stays open and
    says it) or None."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(
        self,
        title: str,
        fields: Sequence[Field],
        check: Callable[[dict[str, str]], str | None],
    ) -> None:
        super().__init__()
        self.title_text = title
        self.fields = tuple(fields)
        self.check = check

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="dialog"):
            yield Label(Text(self.title_text, style="bold"))
            for f in self.fields:  # a line each: 80x24 holds the whole form
                with Horizontal(classes="form-field"):
                    yield Label(f.label, classes="form-label")
                    yield Input(
                        f.value,
                        placeholder=f.hint,
                        id=f"field-{f.key}",
                        disabled=f.locked,
                        compact=True,
                    )
            yield Label("", id="form-problem")
            with Horizontal(id="buttons"):
                yield Button("Save (enter)", variant="primary", id="save", compact=True)
                yield Button("Cancel (esc)", id="cancel", compact=True)

    def on_mount(self) -> None:
        first = next((f for f in self.fields if not f.locked), None)
        if first is not None:
            self.query_one(f"#field-{first.key}", Input).focus()

    def values(self) -> dict[str, str]:
        return {f.key: self.query_one(f"#field-{f.key}", Input).value.strip() for f in self.fields}

    @on(Input.Submitted)
    def _next(self, event: Input.Submitted) -> None:
        # Enter goes on to the next field still empty; with none left it saves, so a person
        # correcting one field of a filled form saves from there, not from the last field.
        keys = [f.key for f in self.fields if not f.locked]
        at = keys.index(str(event.input.id).removeprefix("field-"))
        inputs = [self.query_one(f"#field-{key}", Input) for key in keys[at + 1 :]]
        empty = next((field for field in inputs if not field.value.strip()), None)
        if empty is not None:
            empty.focus()
        else:
            self.save()

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "save":
            self.save()
        else:
            self.dismiss(None)

    def save(self) -> None:
        values = self.values()
        problem = self.check(values)
        if problem is not None:
            self.query_one("#form-problem", Label).update(Text(problem, style="bold red"))
            return
        self.dismiss(values)

    def action_cancel(self) -> None:
        self.dismiss(None)


class InfoScreen(ModalScreen[None]):
    """A budget or an alert whole (enter or d on its row); escape closes."""

    BINDINGS = [Binding("escape,q,d", "close", "Close")]

    def __init__(self, title: str, lines: Sequence[str]) -> None:
        super().__init__()
        self.title_text = title
        self.lines = tuple(lines)

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="dialog"):
            yield Label(Text(self.title_text, style="bold"))
            yield Static(Text("\n".join(self.lines)), id="info-text")

    def action_close(self) -> None:
        self.dismiss(None)


def budget_table(values: dict[str, str], base: dict[str, Any] | None = None) -> dict[str, Any]:
    """The `[[budgets]]` table the form's values make (an edit keeps the budget's other keys:
    thresholds, zone, next period ...)."""
    keep = {k: v for k, v in (base or {}).items() if k not in values}
    return {**keep, **values}


def _budget_problem(base: dict[str, Any] | None) -> Callable[[dict[str, str]], str | None]:
    def check(values: dict[str, str]) -> str | None:
        try:
            parse_budget(budget_table(values, base))
        except BudgetError as exc:
            return str(exc)
        return None

    return check


def _until_problem(values: dict[str, str]) -> str | None:
    try:
        at = parse_until(values["until"])
    except (ValueError, ArgumentTypeError) as exc:
        return f"until: {exc}"
    if not time.time() < at < LATEST:
        return "until: a time in the future (e.g. +2h, +1d, 2026-12-31T18:00)"
    return None


def _override_problem(basis: Basis) -> Callable[[dict[str, str]], str | None]:
    def check(values: dict[str, str]) -> str | None:
        if values["limit"]:
            try:
                parse_limit(values["limit"], basis)
            except BudgetError as exc:
                return str(exc)
        if not values["why"]:
            return "why: say why (the audit log keeps it)"
        return _until_problem(values)

    return check


def _ack_problem(values: dict[str, str]) -> str | None:
    return _until_problem(values) if values["until"] else None


def _silence_problem(values: dict[str, str]) -> str | None:
    problem = scope_problem(values["scope"] or "*") or kind_problem(values["kind"] or "*")
    if problem:
        return problem
    if not values["why"]:
        return "why: say why (it is kept with the silence)"
    return _until_problem(values)


class GovernanceKeys:
    """The Budgets and Alerts tabs' actions (`FleetApp`'s bindings call them)."""

    def __init__(self, app: FleetApp, governance: Governance | None) -> None:
        self.app = app
        self.governance = governance

    def _gov(self, what: str) -> Governance | None:
        """The governance to act through, after checking the token may (else None, said)."""
        if self.governance is None:
            self.app.notify(f"{what}: this hub has no budgets or alerts", severity="warning")
            return None
        if not self.app._may_halt(what):  # the viewer's refusal, as the halt keys say it
            return None
        return self.governance

    def _selected(self, tab: str) -> str | None:
        if self.app.current_tab != tab:
            return None
        row = self.app.current_table.selected_row
        return None if row is None else row.key

    # -- budgets -----------------------------------------------------------------------------

    def add(self) -> None:
        """a: add a budget (Budgets tab) or acknowledge the selected alert (Alerts tab)."""
        if self.app.current_tab == "alerts":
            self.acknowledge()
            return
        if self.app.current_tab != "budgets":
            self.app.notify("a: add a budget in the Budgets tab (5), or acknowledge an alert (6)")
            return
        if self._gov("add budget") is None:
            return
        fields = [Field(k, label, hint) for k, label, hint in BUDGET_FIELDS]
        self._open_budget_form("Add a budget", fields, None)

    def _chosen(self, tab: str, key: str, verb: str) -> tuple[str, dict[str, Any]] | None:
        """The budget or alert selected on `tab` to `verb`, once the token may; else None,
        after saying what to do."""
        chosen = self._selected(tab)
        row = None if chosen is None else self._row(tab, chosen)
        if chosen is None or row is None:
            what = "a budget in the Budgets tab (5)" if tab == "budgets" else "an alert (6)"
            self.app.notify(f"{key}: select {what} to {verb}")
            return None
        if self._gov(verb) is None:
            return None
        return chosen, row

    def _row(self, tab: str, key: str) -> dict[str, Any] | None:
        if self.governance is None:
            return None
        view = self.governance.view()
        rows, field = (view.budgets, "name") if tab == "budgets" else (view.alerts, "id")
        return next((r for r in rows if r[field] == key), None)

    def edit(self) -> None:
        if (chosen := self._chosen("budgets", "e", "edit budget")) is None:
            return
        name, row = chosen
        # the form's keys, and the others of its table that an edit keeps as they are
        base: dict[str, Any] = {k: row[k] for k in (*FORM_KEYS, *KEPT_KEYS) if k in row}
        fields = [
            Field(k, label, hint, str(base[k]), locked=k == "name")
            for k, label, hint in BUDGET_FIELDS
        ]
        self._open_budget_form(f"Edit budget '{name}'", fields, base)

    def _open_budget_form(
        self, title: str, fields: list[Field], base: dict[str, Any] | None
    ) -> None:
        def done(values: dict[str, str] | None) -> None:
            if values is not None:
                table = budget_table(values, base)
                if base is not None:
                    table["name"] = base["name"]
                self._change(
                    f"budget '{table['name']}' saved",
                    lambda g: g.backend.add_budget(table, self.app.who),
                )

        self.app.push_screen(FormScreen(title, fields, _budget_problem(base)), done)

    def remove(self) -> None:
        if (chosen := self._chosen("budgets", "x", "remove budget")) is None:
            return
        name, row = chosen
        lines = (
            f"scope   {row['scope']}",
            f"period  {row['period']} ({row['basis']})",
            f"limit   {row['limit']}, {row['action']} at the limit",
            "its history stays in the store",
        )

        def answered(yes: bool | None) -> None:
            if yes:
                self._change(
                    f"budget '{name}' removed",
                    lambda g: g.backend.remove_budget(name, self.app.who),
                )

        self.app.push_screen(ConfirmScreen(f"Remove budget '{name}'?", lines, "Remove"), answered)

    def override(self) -> None:
        if (chosen := self._chosen("budgets", "o", "override budget")) is None:
            return
        name, row = chosen
        fields = [
            Field(k, label, hint, "+1h" if k == "until" else "")
            for k, label, hint in OVERRIDE_FIELDS
        ]

        def done(values: dict[str, str] | None) -> None:
            if values is None:
                return
            limit = values["limit"] or None
            until = parse_until(values["until"])
            what = "lifted" if limit is None else f"raised to {limit}"
            self._change(
                f"budget '{name}' {what}",
                lambda g: g.backend.override(name, limit, until, values["why"], self.app.who),
            )

        title = f"Override budget '{name}' (limit {row['limit']}, {row['basis']})"
        check = _override_problem(Basis(row["basis"]))
        self.app.push_screen(FormScreen(title, fields, check), done)

    # -- alerts ------------------------------------------------------------------------------

    def acknowledge(self) -> None:
        if (chosen := self._chosen("alerts", "a", "acknowledge")) is None:
            return
        alert = chosen[0]
        fields = [Field(k, label, hint) for k, label, hint in ACK_FIELDS]

        def done(values: dict[str, str] | None) -> None:
            if values is None:
                return
            until = parse_until(values["until"]) if values["until"] else None
            self._change(
                f"alert {alert} acknowledged"
                + ("" if until is None else f" until {values['until']}"),
                lambda g: g.backend.ack(alert, self.app.who, until),
            )

        self.app.push_screen(FormScreen(f"Acknowledge alert {alert}", fields, _ack_problem), done)

    def silence(self) -> None:
        if (chosen := self._chosen("alerts", "m", "silence")) is None:
            return
        found = chosen[1]
        defaults = {"scope": str(found["scope"]), "kind": str(found["kind"]), "until": "+2h"}
        fields = [Field(k, label, hint, defaults.get(k, "")) for k, label, hint in SILENCE_FIELDS]

        def done(values: dict[str, str] | None) -> None:
            if values is None:
                return
            minutes = (parse_until(values["until"]) - time.time()) / 60
            scope, kind = values["scope"] or "*", values["kind"] or "*"
            self._change(
                f"alerts of {kind} on {scope} silenced",
                lambda g: g.backend.silence(scope, kind, minutes, values["why"], self.app.who),
            )

        self.app.push_screen(
            FormScreen("Silence alerts like this one", fields, _silence_problem), done
        )

    def retry(self) -> None:
        if (chosen := self._chosen("alerts", "y", "retry")) is None:
            return
        alert, found = chosen
        if not any(d["state"] in ("dead", "silenced") for d in found.get("deliveries", [])):
            self.app.notify(f"alert {alert} has no dead delivery to send again", severity="warning")
            return
        self._change(f"alert {alert} sent again", lambda g: g.backend.retry(alert))

    def detail(self) -> None:
        """enter / d: the selected budget or alert whole."""
        tab = self.app.current_tab
        key = self._selected(tab)
        if key is None:
            return
        tz, now = self.app.service.tz, self.app.service.clock()
        if tab == "budgets" and (row := self._row(tab, key)) is not None:
            self.app.push_screen(InfoScreen(f"budget '{key}'", budget_lines(row, tz, now)))
        elif tab == "alerts" and (alert := self._row(tab, key)) is not None:
            self.app.push_screen(InfoScreen(f"alert {key}", alert_lines(alert, tz, now)))

    # -- doing it ----------------------------------------------------------------------------

    def _change(self, done: str, change: Callable[[Governance], object]) -> None:
        governance = self.governance
        if governance is not None:
            work = partial(self._apply_change, governance, done, change)
            self.app.run_worker(work, thread=True, group="governance")

    def _apply_change(
        self, governance: Governance, done: str, change: Callable[[Governance], object]
    ) -> None:
        """Off the UI thread (an attached hub answers over the network)."""
        try:
            change(governance)
        except GovernanceError as exc:
            self.app.call_from_thread(self.app.notify, str(exc), severity="error")
            return
        governance.refresh()
        self.app.call_from_thread(self.app.notify, done)
