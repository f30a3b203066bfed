"""A tiny Faust app for tests/test_faust_roundtrip.py: forward every record of one topic
to another (key, value and headers unchanged), through faust-streaming's ``kafka://``
(aiokafka) driver. Configured by environment variables (this is test code):

    ROUNDTRIP_BROKER   host:port of the Kafka broker
    ROUNDTRIP_APP_ID   the Faust app id (consumer group)
    ROUNDTRIP_SOURCE   topic to read
    ROUNDTRIP_TARGET   topic to write
    ROUNDTRIP_DATADIR  Faust's data dir

Run as ``python tests/faust_roundtrip_app.py worker -l info``.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import faust

from tests.faust_script import main

log = logging.getLogger("roundtrip")

app = faust.App(
    os.environ["ROUNDTRIP_APP_ID"],
    broker=f"kafka://{os.environ['ROUNDTRIP_BROKER']}",
    store="memory://",
    datadir=os.environ["ROUNDTRIP_DATADIR"],
    web_enabled=False,
    consumer_auto_offset_reset="earliest",
    topic_partitions=1,
    topic_replication_factor=1,
    producer_max_request_size=8 * 1024 * 1024 + 65536,
)
source = app.topic(os.environ["ROUNDTRIP_SOURCE"], key_serializer="raw", value_serializer="raw")
target = app.topic(os.environ["ROUNDTRIP_TARGET"], key_serializer="raw", value_serializer="raw")


@app.agent(source)
async def forward(stream: Any) -> None:
    async for event in stream.events():
        await target.send(key=event.key, value=event.value, headers=event.headers)
        log.info("forwarded %r", event.key)


if __name__ == "__main__":
    main(app)
