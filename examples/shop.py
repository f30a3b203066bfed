"""The example app `steplog dev` runs when given none: an order flow.

Send `app/order.created` (e.g. `steplog send app/order.created --data '{"orderId": "o1",
"total": 30}'`): `process-order` reserves stock, charges, and emits `app/order.paid`
(choreography); `send-receipt` reacts to that; failures land in `notify-ops`.
`ask-for-review` sleeps a minute after payment, then waits up to a day for
`app/review.posted` of that order (a refund, `app/order.refunded`, cancels it).
"""

from __future__ import annotations

import asyncio

from streams import App, Cancel, Context, Event, TriggerEvent

app = App("shop")


def reserve(order_id: str) -> dict[str, str]:
    return {"order": order_id, "reservation": f"r-{order_id}"}


async def charge(total: float) -> dict[str, float]:
    await asyncio.sleep(0.01)  # a payment call
    return {"charged": total}


async def notify_ops(ctx: Context) -> dict[str, str]:
    ctx.logger.warning("order flow failed: %s", ctx.event.data.get("error"))
    return {"alerted": "ops"}


@app.function(
    fn_id="process-order",
    trigger=TriggerEvent(event="app/order.created", expression="event.data.total > 0"),
    on_failure=notify_ops,
)
async def process_order(ctx: Context) -> dict[str, object]:
    order_id = ctx.event.data["orderId"]
    reservation = await ctx.step.run("reserve-inventory", reserve, order_id)
    payment = await ctx.step.run("charge", charge, ctx.event.data["total"])
    await ctx.step.send_event(
        "order-paid", Event(name="app/order.paid", data={"orderId": order_id, **payment})
    )
    return {"status": "completed", "reservation": reservation["reservation"]}


@app.function(fn_id="send-receipt", trigger=TriggerEvent(event="app/order.paid"))
async def send_receipt(ctx: Context) -> dict[str, str]:
    sent = await ctx.step.run("email", lambda: {"to": ctx.event.data["orderId"]})
    return {"receipt": sent["to"]}


@app.function(
    fn_id="ask-for-review",
    trigger=TriggerEvent(event="app/order.paid"),
    cancel=[Cancel(event="app/order.refunded", if_exp="async.data.orderId == event.data.orderId")],
)
async def ask_for_review(ctx: Context) -> dict[str, object]:
    await ctx.step.sleep("let-it-arrive", "1m")
    await ctx.step.send_event(
        "ask", Event(name="app/review.requested", data={"orderId": ctx.event.data["orderId"]})
    )
    review = await ctx.step.wait_for_event(
        "wait-review",
        event="app/review.posted",
        timeout="1d",
        if_exp="async.data.orderId == event.data.orderId",
    )
    return {"reviewed": review is not None}
