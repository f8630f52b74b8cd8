"""payments (JSON lines): one payment per order, seconds after it; a few first attempts fail
and are retried with a new payment_id. The final status mirrors the order's outcome."""

from __future__ import annotations

import numpy as np
import pandas as pd

from lakehouse.generate.common import make_ids, pick, rng_for, utc_iso
from lakehouse.generate.defects import Batch, DefectSpec
from lakehouse.generate.orders import OrderFacts
from lakehouse.generate.population import World

COLUMNS = ("payment_id", "order_id", "payment_ts", "amount", "currency", "method", "status")
DEFECTS = DefectSpec(
    wrong_values={
        "amount": ("12,50", "N/A", "EUR 12.50"),
        "payment_ts": ("not-a-date", "N/A"),
    },
    missing_fields=("order_id", "payment_ts", "amount"),
)
METHODS = np.array(["card", "paypal", "klarna", "apple_pay", "bank_transfer"])
METHOD_CUM = np.cumsum((0.45, 0.25, 0.12, 0.10, 0.08))
# By order status: completed, cancelled, returned.
FINAL_STATUS = np.array(["succeeded", "voided", "refunded"])
RETRY_RATE = 0.04


def day_batch(world: World, day: int, orders: OrderFacts) -> Batch:
    rng = rng_for(world.seed, "payments", day)
    n = len(orders.order_id)
    retried = rng.random(n) < RETRY_RATE
    first_epoch = orders.epoch + rng.integers(1, 31, n)
    retry_epoch = first_epoch + rng.integers(30, 301, n)
    method = pick(METHOD_CUM, rng.random(n))
    retry_method = np.where(rng.random(n) < 0.5, method, pick(METHOD_CUM, rng.random(n)))

    # First attempts of every order, then the retries of those whose first attempt failed.
    at = np.concatenate([np.arange(n), np.flatnonzero(retried)])
    is_retry = np.arange(len(at)) >= n
    epoch = np.where(is_retry, retry_epoch[at], first_epoch[at])
    status = np.where(retried[at] & ~is_retry, "failed", FINAL_STATUS[orders.status[at]])
    order = np.argsort(epoch, kind="stable")
    at, epoch, status = at[order], epoch[order], status[order]
    is_retry = is_retry[order]
    columns = {
        "payment_id": make_ids(f"P{world.calendar.compact(day)}-", np.arange(1, len(at) + 1), 7),
        "order_id": orders.order_id[at],
        "payment_ts": utc_iso(epoch),
        "amount": orders.amount[at],
        "currency": orders.currency[at],
        "method": METHODS[np.where(is_retry, retry_method[at], method[at])],
        "status": status,
    }
    return Batch(pd.DataFrame(columns), orders.is_late[at])
