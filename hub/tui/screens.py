"""The dashboard's pop-up screens: confirmation, help, sort chooser and the detail view."""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Label, OptionList, Sparkline, Static

from hub.dashboard import COLUMNS, Column, Detail, Table, TableDiff
from hub.tui.table import LiveTable


class ConfirmScreen(ModalScreen[bool]):
    """Yes / no for a halt action; names what will be hit. Escape and `n` cancel."""

    BINDINGS = [
        Binding("escape,n", "answer(False)", "Cancel"),
        Binding("y", "answer(True)", "Yes"),
    ]

    def __init__(self, title: str, lines: Sequence[str], yes: str) -> None:
        super().__init__()
        self.title_text = title
        self.lines = tuple(lines)
        self.yes = yes

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label(Text(self.title_text, style="bold"), id="confirm-title")
            for line in self.lines:
                yield Label(Text(line))
            with Horizontal(id="buttons"):
                yield Button(f"{self.yes} (y)", variant="error", id="yes")
                yield Button("Cancel (n / esc)", variant="primary", id="no")

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()  # the safe answer has the focus

    @on(Button.Pressed)
    def pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,q,question_mark", "dismiss_help", "Close")]

    def __init__(self, keys: Sequence[tuple[str, str]], notes: Sequence[str]) -> None:
        super().__init__()
        self.keys = tuple(keys)
        self.notes = tuple(notes)

    def compose(self) -> ComposeResult:
        text = Text()
        text.append("Keys\n\n", style="bold")
        width = max(len(k) for k, _ in self.keys)
        for key, what in self.keys:
            text.append(f"  {key:<{width}}  ", style="bold cyan")
            text.append(f"{what}\n")
        text.append("\n")
        for note in self.notes:
            text.append(f"{note}\n", style="grey70")
        with VerticalScroll(id="dialog"):
            yield Static(text, id="help-text")

    def action_dismiss_help(self) -> None:
        self.dismiss(None)


class SortScreen(ModalScreen[str | None]):
    """Choose the column to sort by (choosing the current one again flips the direction)."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, columns: Sequence[Column], current: str | None) -> None:
        super().__init__()
        self.columns = tuple(columns)
        self.current = current

    def compose(self) -> ComposeResult:
        labels = [
            f"{c.label}{'  (current: flip)' if c.key == self.current else ''}" for c in self.columns
        ]
        with Vertical(id="dialog"):
            yield Label("Sort by (enter)")
            yield OptionList(*labels, id="sort-options")

    def on_mount(self) -> None:
        options = self.query_one(OptionList)
        keys = [c.key for c in self.columns]
        if self.current in keys:  # opens on the column sorted by now
            options.highlighted = keys.index(self.current)
        options.focus()

    @on(OptionList.OptionSelected)
    def chosen(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(self.columns[event.option_index].key)

    def action_cancel(self) -> None:
        self.dismiss(None)


class DetailScreen(ModalScreen[None]):
    """One machine, profile or session: its figures, spend over time, sessions and timeline."""

    BINDINGS = [Binding("escape,q,d", "close", "Close")]

    def __init__(self, detail: Detail) -> None:
        super().__init__()
        self.detail = detail

    def compose(self) -> ComposeResult:
        d = self.detail
        figures = Text()
        for label, value in d.figures:
            figures.append(f"{label:>10}  ", style="bold")
            figures.append(f"{value}\n")
        with VerticalScroll(id="detail"):
            yield Label(Text(d.title, style="bold"), id="detail-title")
            yield Static(figures, id="detail-figures")
            yield Label(d.series_label)
            yield Sparkline([float(v) for v in d.series], id="detail-spark")
            yield Label(Text(f"sessions ({len(d.sessions)})", style="bold"))
            yield LiveTable(COLUMNS[Table.SESSIONS], id="detail-sessions")
            yield Label(Text("profile timeline", style="bold"))
            yield Static("\n".join(d.timeline) or "no profile events", id="detail-timeline")

    def on_mount(self) -> None:
        table = self.query_one("#detail-sessions", LiveTable)
        table.call_after_refresh(
            table.apply, TableDiff(upserts={r.key: r for r in self.detail.sessions})
        )

    def action_close(self) -> None:
        self.dismiss(None)
