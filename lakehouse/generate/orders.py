"""orders (CSV): one order per converting session, placed shortly after its checkout event.

Amount, basket size and outcome follow the customer's archetype (champions spend most,
bargain hunters little and return more); currency follows the customer's country. From the
drift day on, the file gains a trailing discount_code column.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from lakehouse.generate.clickstream import Conversions
from lakehouse.generate.common import make_ids, pick, rng_for, utc_iso
from lakehouse.generate.defects import Batch, DefectSpec
from lakehouse.generate.population import (
    A_DISCOUNT,
    A_ITEMS,
    A_STATUS_CUM,
    COUNTRIES,
    World,
    customer_ids,
)

COLUMNS = ("order_id", "customer_id", "order_ts", "amount", "currency", "status", "n_items")
DRIFT_FIELD = "discount_code"
DEFECTS = DefectSpec(
    wrong_values={
        "amount": ("12,50", "N/A", "€19.99", "twelve"),
        "n_items": ("two", "1.5"),
        "order_ts": ("N/A", "03/01/2026 10:15"),
    },
    missing_fields=("customer_id", "order_ts", "amount"),
    drift_field=DRIFT_FIELD,
)
STATUSES = np.array(["completed", "cancelled", "returned"])
# Customers in GB and the US pay in their currency; amounts convert from the EUR basket value.
CURRENCY_BY_COUNTRY = np.array(["GBP" if c == "GB" else "USD" if c == "US" else "EUR"
                                for c in COUNTRIES])
EUR_RATE = {"EUR": 1.0, "GBP": 0.86, "USD": 1.05}
DISCOUNT_CODES = np.array(["WINTER10", "WELCOME5", "FREESHIP", "VIP15"])
AMOUNT_SIGMA = 0.5


@dataclass
class OrderFacts:
    """What payments need to know about today's orders."""

    order_id: np.ndarray
    epoch: np.ndarray
    amount: np.ndarray
    currency: np.ndarray
    status: np.ndarray
    is_late: np.ndarray


def day_batch(world: World, day: int, conversions: Conversions) -> tuple[Batch, OrderFacts]:
    rng = rng_for(world.seed, "orders", day)
    c = world.customers
    n = len(conversions.customer)
    epoch = conversions.checkout_epoch + rng.integers(5, 121, n)
    order = np.argsort(epoch, kind="stable")
    customer, epoch = conversions.customer[order], epoch[order]
    is_late = conversions.is_late[order]
    arch = c.archetype[customer]

    eur = rng.lognormal(np.log(c.order_value[customer]) - AMOUNT_SIGMA**2 / 2, AMOUNT_SIGMA)
    currency = CURRENCY_BY_COUNTRY[c.country[customer]]
    rate = np.select([currency == "GBP", currency == "USD"], [EUR_RATE["GBP"], EUR_RATE["USD"]],
                     1.0)
    amount = np.round(np.maximum(eur * rate, 2.99), 2)
    n_items = 1 + rng.poisson(np.maximum(A_ITEMS[arch] - 1, 0))
    status = pick(A_STATUS_CUM[arch], rng.random(n))
    order_id = make_ids(f"O{world.calendar.compact(day)}-", np.arange(1, n + 1), 6)
    columns = {
        "order_id": order_id,
        "customer_id": customer_ids(customer),
        "order_ts": utc_iso(epoch),
        "amount": amount,
        "currency": currency,
        "status": STATUSES[status],
        "n_items": n_items.astype(np.int64),
    }
    uses_code = rng.random(n) < A_DISCOUNT[arch]
    code = DISCOUNT_CODES[rng.integers(0, len(DISCOUNT_CODES), n)]
    if day >= world.drift_day:
        columns[DRIFT_FIELD] = np.where(uses_code, code, "")
    facts = OrderFacts(order_id, epoch, amount, currency, status, is_late)
    return Batch(pd.DataFrame(columns), is_late), facts
