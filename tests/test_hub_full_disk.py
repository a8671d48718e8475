"""The hub's disk fills up under a stream of batches: a real tmpfs, real nng on loopback.

The store's commit failed with "database or disk is full", which ended the receiver thread:
the hub process ran on but answered no node again, even once there was room. A batch that
cannot be committed is now refused with the reason (the node logs it and sends the batch
again; silence would read as a wrong key) and the receiver serves on.
"""

from __future__ import annotations

from pathlib import Path

from hub.config import init_hub, load_hub_config
from hub.ledger import Period
from hub.serve import Hub
from shared.codec import pack
from tests.fleet_harness import free_port
from tests.small_disk import fill, small_tmpfs
from tests.test_hub_security import Peer, call


def test_a_full_disk_refuses_a_batch_with_why_and_the_next_try_is_stored(tmp_path: Path) -> None:
    with small_tmpfs(tmp_path / "disk", "4m") as disk:
        config, _ = init_hub(
            tmp_path / "hub.toml",
            overrides={
                "events": f"tcp://127.0.0.1:{free_port()}",
                "commands": f"tcp://127.0.0.1:{free_port()}",
                "data_dir": str(disk),
                "advertise": False,
            },
        )
        hub = Hub(load_hub_config(config))
        service = hub.start()
        try:
            node = Peer(hub, "spark01")
            assert node.send(node.frame(1, 1, [pack(call("a", machine="spark01"))])) is not None
            filler = fill(disk)
            # wide rows, so that the batch needs pages the full disk cannot give
            batch = [
                pack(call(f"b{i}", machine="spark01", session_id="x" * 2000)) for i in range(300)
            ]
            refused = node.send(node.frame(2, 301, batch))
            assert refused is not None and "disk is full" in str(refused["err"])
            filler.unlink()
            assert node.send(node.frame(2, 301, batch)) == {"seq1": 301}
            assert service.fleet(Period.TODAY).calls == 301
            node.close()
        finally:
            hub.stop()
