"""Standard Webhooks signing: `webhook-id` (the same on every retry: the receiver's idempotency
key), `webhook-timestamp` (the attempt's), `webhook-signature: v1,<base64 HMAC-SHA256 of
"id.timestamp.body">` under the sink's `whsec_` secret."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import stat
from pathlib import Path
from typing import Final

from shared.config import ConfigError

PREFIX: Final = "whsec_"
MIN_BYTES: Final = 24  # the spec: at least 192 bits, at most 512 bytes
MAX_BYTES: Final = 512


def webhook_id(alert_id: str) -> str:
    """The message id of an alert: stable, and free of the '.' the signed content splits on
    (a finding id may hold one, e.g. a machine named spark02.lan)."""
    return "msg_" + hashlib.sha256(alert_id.encode()).hexdigest()[:32]


def read_webhook_secret(path: Path) -> bytes:
    """The secret bytes of a `whsec_<base64>` file that only its owner can read."""
    what = "webhook secret"
    try:
        mode = path.stat().st_mode
        if not stat.S_ISREG(mode):
            raise ConfigError(f"{path}: {what} must be a regular file")
        if mode & 0o077:
            raise ConfigError(
                f"{path}: {what} is accessible by group or others "
                f"(mode {stat.S_IMODE(mode):04o}); run: chmod 600 {path}"
            )
        text = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: {what} file does not exist (make one: umask 077; "
            f"printf 'whsec_%s\\n' \"$(openssl rand -base64 32)\" > {path})"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read {what}: {getattr(exc, 'strerror', exc)}") from exc
    if not text.startswith(PREFIX):
        raise ConfigError(f"{path}: {what} must be whsec_ followed by base64")
    try:
        key = base64.b64decode(text[len(PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(f"{path}: {what} is not whsec_ followed by base64") from None
    if not MIN_BYTES <= len(key) <= MAX_BYTES:
        raise ConfigError(
            f"{path}: {what} must be {MIN_BYTES} to {MAX_BYTES} bytes, got {len(key)}"
        )
    return key


def signature(secret: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(secret, signed, hashlib.sha256).digest()).decode()


def webhook_headers(
    msg_id: str, timestamp: int, body: bytes, secret: bytes | None
) -> dict[str, str]:
    headers = {"webhook-id": msg_id, "webhook-timestamp": str(timestamp)}
    if secret is not None:
        headers["webhook-signature"] = signature(secret, msg_id, timestamp, body)
    return headers
