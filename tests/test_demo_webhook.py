"""The demo's webhook receiver: it accepts what an independent Standard Webhooks library signs
with its secret, once per webhook-id, refuses anything else, and leaves no port or thread
behind when stopped."""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from standardwebhooks.webhooks import Webhook

from hub.demo._webhook import Delivery, DemoWebhook, write_secret


def body(alert_id: str, text: str = "budget 'x' at 100 %") -> bytes:
    data = {"id": alert_id, "kind": "budget", "scope": "machine=spark02", "text": text}
    return json.dumps({"type": "alert.raised", "data": data}).encode()


def post(url: str, payload: bytes, headers: dict[str, str]) -> int:
    request = urllib.request.Request(url, payload, {**headers, "content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            status: int = reply.status
            return status
    except urllib.error.HTTPError as exc:
        return exc.code


def signed(secret: str, msg_id: str, payload: bytes, at: datetime | None = None) -> dict[str, str]:
    when = at or datetime.now(UTC)
    signature = Webhook(secret).sign(msg_id, when, payload.decode())
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(when.timestamp())),
        "webhook-signature": signature,
    }


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[tuple[DemoWebhook, str, list[Delivery]]]:
    secret_file = write_secret(tmp_path / "hook.secret")
    told: list[Delivery] = []
    hook = DemoWebhook(secret_file, tmp_path / "deliveries.jsonl", told.append).start()
    try:
        yield hook, secret_file.read_text().strip(), told
    finally:
        hook.stop()


def test_a_signed_alert_is_kept_once_and_told(
    receiver: tuple[DemoWebhook, str, list[Delivery]], tmp_path: Path
) -> None:
    hook, secret, told = receiver
    assert (tmp_path / "hook.secret").stat().st_mode & 0o777 == 0o600
    payload = body("budget:x:1:100")
    assert post(hook.url, payload, signed(secret, "msg_1", payload)) == 204
    # a retry: the same webhook-id, a new timestamp and signature
    assert post(hook.url, payload, signed(secret, "msg_1", payload)) == 204
    assert [d.alert["id"] for d in told] == ["budget:x:1:100"]
    assert [d.webhook_id for d in hook.deliveries] == ["msg_1"]
    lines = (tmp_path / "deliveries.jsonl").read_text().splitlines()
    assert len(lines) == 1
    record = json.loads(lines[0])
    assert Webhook(secret).verify(record["body"], record["headers"])["data"]["id"] == (
        "budget:x:1:100"
    )


def test_anything_not_signed_with_its_secret_is_refused(
    receiver: tuple[DemoWebhook, str, list[Delivery]],
) -> None:
    hook, secret, told = receiver
    payload = body("budget:x:1:100")
    other = "whsec_" + base64.b64encode(b"another secret, 32 bytes long!!!").decode()
    headers = signed(secret, "msg_2", payload)
    stale = datetime.fromtimestamp(time.time() - 600, UTC)
    refused = [
        post(hook.url, payload, signed(other, "msg_2", payload)),  # another secret
        post(hook.url, body("budget:x:1:100", "tampered"), headers),  # another body
        post(hook.url, payload, {**headers, "webhook-id": "msg_3"}),  # another id
        post(hook.url, payload, signed(secret, "msg_2", payload, stale)),  # a replay
        post(hook.url, payload, {}),  # no signature at all
    ]
    assert refused == [401] * 5
    assert hook.rejected == 5 and told == [] and hook.deliveries == []


def test_stopped_it_leaves_no_port_and_no_thread(tmp_path: Path) -> None:
    hook = DemoWebhook(write_secret(tmp_path / "s"), tmp_path / "j.jsonl").start()
    port = int(hook.url.split(":")[2].split("/")[0])
    hook.stop()
    hook.stop()  # idempotent
    assert not any(t.name == "demo-webhook" for t in threading.enumerate())
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0


def test_a_redelivery_to_the_next_run_in_the_same_dir_is_not_told_again(tmp_path: Path) -> None:
    """A demo killed after keeping an alert but before the hub heard the 204: the next run's
    hub sends it again with the same webhook-id."""
    secret_file = write_secret(tmp_path / "hook.secret")
    secret = secret_file.read_text().strip()
    payload = body("budget:x:1:100")
    journal = tmp_path / "deliveries.jsonl"
    first = DemoWebhook(secret_file, journal).start()
    try:
        assert post(first.url, payload, signed(secret, "msg_1", payload)) == 204
    finally:
        first.stop()
    told: list[Delivery] = []
    again = DemoWebhook(secret_file, journal, told.append).start()
    try:
        assert post(again.url, payload, signed(secret, "msg_1", payload)) == 204
        other = body("cache_thrash:s1")
        assert post(again.url, other, signed(secret, "msg_2", other)) == 204
    finally:
        again.stop()
    assert [d.webhook_id for d in told] == ["msg_2"]
    assert len(journal.read_text().splitlines()) == 2
