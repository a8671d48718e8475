"""A Server-Sent Events reader: lines in, (event, data) out, as the HTML standard parses them
(comments skipped, `data` lines joined, an event dispatched at its blank line). Twenty lines
of our own rather than a dependency for them."""

from __future__ import annotations

from collections.abc import Iterable, Iterator


def sse_events(lines: Iterable[str]) -> Iterator[tuple[str, str]]:
    """(event name, data) for each event in `lines` (without their line ends)."""
    name, data = "", list[str]()
    for line in lines:
        if not line:
            if data:
                yield name or "message", "\n".join(data)
            name, data = "", list[str]()
            continue
        if line.startswith(":"):
            continue  # a comment: the hub's keepalive
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "event":
            name = value
        elif field == "data":
            data.append(value)
