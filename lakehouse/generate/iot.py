"""iot_readings (CSV): a few readings a day from each registered device. About 8% of devices
are faulty: they vibrate more, run hotter and report error codes far more often."""

from __future__ import annotations

import numpy as np
import pandas as pd

from lakehouse.generate.common import (
    DAY_END_MARGIN_S,
    SECONDS_PER_DAY,
    make_ids,
    rng_for,
    stochastic_round,
    utc_iso,
)
from lakehouse.generate.defects import Batch, DefectSpec
from lakehouse.generate.population import World, customer_ids, device_ids

COLUMNS = (
    "reading_id", "device_id", "customer_id", "reading_ts", "temperature", "vibration",
    "battery", "error_code",
)
DEFECTS = DefectSpec(
    wrong_values={
        "temperature": ("hot", "N/A", "21,5"),
        "vibration": ("high", "n/a"),
        "battery": ("low", "n/a", "100%"),
    },
    missing_fields=("device_id", "customer_id", "reading_ts"),
)
READINGS_PER_DAY = 2.0
HEALTHY_ERRORS = np.array(["E101", "E102"])
FAULT_ERRORS = np.array(["E301", "E302", "E404", "E501"])


def day_batch(world: World, day: int) -> Batch:
    rng = rng_for(world.seed, "iot_readings", day)
    d, c = world.devices, world.customers
    registered = c.signup_day[d.owner]
    device = np.repeat(np.arange(len(d), dtype=np.int64),
                       rng.poisson(np.where(registered <= day, READINGS_PER_DAY, 0.0)))
    # Late readings: a gateway that was offline uploads its buffer a day or more later.
    n_late = stochastic_round(world.late_rate * len(device), rng)
    lag = np.minimum(rng.geometric(0.6, n_late), 3)
    late_device = np.empty(n_late, dtype=np.int64)
    for lag_days in (1, 2, 3):
        at = np.flatnonzero(lag == lag_days)
        eligible = np.flatnonzero(registered <= day - lag_days)
        if not len(eligible):
            eligible = np.flatnonzero(registered < 0)
        late_device[at] = eligible[rng.integers(0, len(eligible), len(at))]
    device = np.concatenate([device, late_device])
    reading_day = np.concatenate([np.full(len(device) - n_late, day), day - lag])
    n = len(device)

    second = rng.integers(0, SECONDS_PER_DAY - DAY_END_MARGIN_S, n)
    epoch = world.calendar.day_epoch(reading_day) + second
    faulty = d.faulty[device]
    temperature = d.base_temperature[device] + rng.normal(0.0, 0.8, n) \
        + np.where(faulty, rng.normal(4.0, 3.0, n), 0.0)
    vibration = np.where(faulty, 0.2 + rng.gamma(2.0, 0.15, n), rng.gamma(2.0, 0.03, n))
    hours = reading_day * 24 + second / 3600
    # Drains linearly and is recharged at ~8%: a sawtooth per device.
    battery = 100.0 - np.mod(hours * d.drain[device] + d.phase[device], 92.0)
    error = np.where(
        rng.random(n) < np.where(faulty, 0.18, 0.005),
        np.where(faulty, FAULT_ERRORS[rng.integers(0, len(FAULT_ERRORS), n)],
                 HEALTHY_ERRORS[rng.integers(0, len(HEALTHY_ERRORS), n)]),
        "")
    order = np.argsort(epoch, kind="stable")
    device = device[order]
    columns = {
        "reading_id": make_ids(f"R{world.calendar.compact(day)}-", np.arange(1, n + 1), 8),
        "device_id": device_ids(device),
        "customer_id": customer_ids(d.owner[device]),
        "reading_ts": utc_iso(epoch[order]),
        "temperature": np.round(temperature[order], 2),
        "vibration": np.round(vibration[order], 3),
        "battery": np.round(battery[order], 1),
        "error_code": error[order],
    }
    return Batch(pd.DataFrame(columns), (reading_day < day)[order])
