"""A Faust app with steplog's fetch loop (``agents.delivery.install``) and a table, whose
seek to the committed offsets after each assignment is followed by a pause, as on a
loaded machine where positioning the partitions that have no committed offset yet took
1.1-1.5 s. Its agent is slow, so records handed over meanwhile wait in its queue; Faust
empties that queue when its recovery resumes the flow at the end of the rebalance.

For tests/test_delivery_rebalance.py. Configured by environment variables:

    SLOWSEEK_BROKER    host:port of the Kafka broker
    SLOWSEEK_APP_ID    the Faust app id (consumer group)
    SLOWSEEK_SOURCE    topic to read
    SLOWSEEK_TARGET    topic every record read is forwarded to
    SLOWSEEK_DATADIR   Faust's data dir
    SLOWSEEK_PAUSE     seconds to pause after the seek

Run as ``python tests/apps/slow_seek_app.py worker -l info --without-web``.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import faust

from agents import delivery
from tests.faust_script import main

app = faust.App(
    os.environ["SLOWSEEK_APP_ID"],
    broker=f"kafka://{os.environ['SLOWSEEK_BROKER']}",
    store="memory://",
    datadir=os.environ["SLOWSEEK_DATADIR"],
    web_enabled=False,
    consumer_auto_offset_reset="earliest",
    topic_partitions=1,
    topic_replication_factor=1,
)
source = app.topic(os.environ["SLOWSEEK_SOURCE"], key_serializer="raw", value_serializer="raw")
target = app.topic(os.environ["SLOWSEEK_TARGET"], key_serializer="raw", value_serializer="raw")
# a table: Faust then runs its table recovery, which resumes the flow before the seek
seen = app.Table("seen", default=int, partitions=1)

delivery.install(app)
_seek = app.consumer.seek_to_committed
PAUSE = float(os.environ["SLOWSEEK_PAUSE"])


async def slow_seek_to_committed() -> Any:
    positions = await _seek()
    await asyncio.sleep(PAUSE)  # the flow is active and the partitions are positioned
    return positions


app.consumer.seek_to_committed = slow_seek_to_committed


@app.agent(source)
async def forward(stream: Any) -> None:
    async for event in stream.events():
        await asyncio.sleep(0.01)  # slow: what it does not take waits in its queue
        seen[event.key.decode()] += 1
        await target.send(key=event.key, value=event.value)


if __name__ == "__main__":
    main(app)
