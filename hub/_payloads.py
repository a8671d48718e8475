"""The usage rows' payloads, compressed with a dictionary trained on the store's own events.

An event's msgpack is ~400 bytes, most of it field names, model and agent names and paths that
every event repeats; zstd with a dictionary of those takes it to about a quarter. The store
trains one once it holds `TRAIN_AFTER` events (until then rows are plain msgpack), keeps it in
its `meta` table for good, and compresses every payload it writes from then on. A payload that
starts with zstd's magic number is compressed (msgpack never starts so: an event is a map),
any other is plain, so old rows, migrated rows and rows written before training read alike.
"""

from __future__ import annotations

import logging
import sqlite3
from typing import Final

import zstandard

from shared.codec import unpack
from shared.events import UsageEvent

log = logging.getLogger(__name__)

TRAIN_AFTER: Final = 2_000  # events to train on (the latest ones)
DICT_BYTES: Final = 16_384
LEVEL: Final = 3
_MAGIC: Final = b"\x28\xb5\x2f\xfd"  # zstd's frame magic number, little-endian


class Payloads:
    """Encode and decode one store's usage payloads; not thread-safe (the store's owner
    serialises calls)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db
        self._compress: zstandard.ZstdCompressor | None = None
        self._decompress: zstandard.ZstdDecompressor | None = None
        self._tried = False  # training failed once: rows stay plain in this process
        row = db.execute("SELECT value FROM meta WHERE key = 'payload_dict'").fetchone()
        if row is not None:
            self._use(zstandard.ZstdCompressionDict(row[0]))

    def _use(self, zdict: zstandard.ZstdCompressionDict) -> None:
        self._compress = zstandard.ZstdCompressor(
            level=LEVEL, dict_data=zdict, write_checksum=False, write_content_size=True
        )
        self._decompress = zstandard.ZstdDecompressor(dict_data=zdict)

    def train(self) -> None:
        """Train the dictionary once the store holds enough events (inside the caller's
        transaction); a no-op once trained."""
        if self._compress is not None or self._tried:
            return
        samples = [
            payload
            for (payload,) in self._db.execute(
                "SELECT payload FROM usage ORDER BY rowid DESC LIMIT ?", (TRAIN_AFTER,)
            )
            if not payload.startswith(_MAGIC)
        ]
        if len(samples) < TRAIN_AFTER:
            return
        try:
            zdict = zstandard.train_dictionary(DICT_BYTES, samples)
        except zstandard.ZstdError as exc:  # too alike to learn from: stay plain
            log.warning("no payload dictionary (rows stay uncompressed): %s", exc)
            self._tried = True
            return
        self._db.execute(
            "INSERT INTO meta (key, value) VALUES ('payload_dict', ?)", (zdict.as_bytes(),)
        )
        self._use(zdict)

    def encode(self, packed: bytes) -> bytes:
        return packed if self._compress is None else self._compress.compress(packed)

    def decode(self, payload: bytes) -> UsageEvent:
        if payload.startswith(_MAGIC):
            if self._decompress is None:  # a dictionary another process trained since
                row = self._db.execute(
                    "SELECT value FROM meta WHERE key = 'payload_dict'"
                ).fetchone()
                self._use(zstandard.ZstdCompressionDict(row[0]))
                assert self._decompress is not None
            payload = self._decompress.decompress(payload)
        event = unpack(payload)
        assert isinstance(event, UsageEvent), "the usage table holds usage events only"
        return event
