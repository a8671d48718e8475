"""One import of a billing export: parse it (every row checked), then file its good rows in the
store. What `POST /api/v1/reconcile/import` and `fleet-hub reconcile import` (on the store, when
no hub serves) both run, so that both answer alike."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

from hub.reconcile.billed_store import BilledImports
from hub.reconcile.imports import ImportOptions, parse_file


def import_bill(
    store_path: Path, name: str, data: bytes, fmt: str, options: ImportOptions, exported: date
) -> dict[str, Any]:
    """Raises ImportFileError when the file as a whole cannot be read (nothing is stored)."""
    parsed = parse_file(data, name, fmt, options)
    with BilledImports(store_path) as imports:
        stored = imports.store(parsed.rows, exported, name, parsed.partial)
    return {
        "file": name,
        "format": fmt,
        "rows_read": len(parsed.rows),
        "rows_refused": parsed.refused,
        "errors": parsed.errors,
        "notes": parsed.notes,
        **stored.to_json(),
    }
