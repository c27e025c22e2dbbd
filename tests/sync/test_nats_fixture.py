"""The nats_server fixture itself: it serves JetStream, and comes back on the same port and
store after a stop, keeping what the stream held."""

from __future__ import annotations

import asyncio

import pytest

from .conftest import NatsServer

nats = pytest.importorskip("nats")


async def _publish_and_count(url: str, n: int) -> int:
    nc = await nats.connect(url, allow_reconnect=False)
    try:
        js = nc.jetstream()
        await js.add_stream(name="T", subjects=["t.>"])
        for i in range(n):
            await js.publish("t.x", str(i).encode())
        info = await js.stream_info("T")
        return int(info.state.messages)
    finally:
        await nc.close()


@pytest.mark.integration
def test_server_serves_jetstream_and_keeps_the_store_across_restart(
    nats_server: NatsServer,
) -> None:
    assert asyncio.run(_publish_and_count(nats_server.url, 3)) == 3
    port = nats_server.port
    nats_server.stop()
    assert not nats_server.running
    nats_server.start()
    assert nats_server.port == port
    assert asyncio.run(_publish_and_count(nats_server.url, 2)) == 5
    nats_server.kill()
    nats_server.start()
    assert asyncio.run(_publish_and_count(nats_server.url, 0)) == 5
