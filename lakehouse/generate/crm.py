"""crm_customers (CSV): the CRM export.

Day one is the initial load of every customer who signed up before the start date; each later
day carries that day's signups plus a few updated records of existing customers (same
customer_id, later updated_at: consent changed, new email or phone, a retention date set).
Values are messy on purpose: emails in mixed case with surrounding spaces, countries as code,
lower-case code or full name, phones in half a dozen formats, handles with or without '@'.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from lakehouse.generate.common import (
    DAY_END_MARGIN_S,
    SECONDS_PER_DAY,
    iso_day,
    rng_for,
    stochastic_round,
    utc_iso,
)
from lakehouse.generate.defects import Batch, DefectSpec
from lakehouse.generate.population import (
    CALLING_CODES,
    COUNTRIES,
    COUNTRY_NAMES,
    EMAIL_DOMAINS,
    FIRST_NAMES,
    FIRST_SLUGS,
    LAST_NAMES,
    LAST_SLUGS,
    NO_EXPIRY,
    World,
)

COLUMNS = (
    "customer_id", "first_name", "last_name", "email", "phone", "country", "signup_date",
    "marketing_consent", "data_expiry_date", "social_handle", "updated_at",
)
DEFECTS = DefectSpec(
    wrong_values={
        "signup_date": ("n/a", "31/12/2019", "2019-02-30"),
        # Not 'yes'/'no'/'1': Spark casts those to booleans, so they would not be defects.
        "marketing_consent": ("maybe", "unknown", "n/a"),
    },
    missing_fields=("customer_id", "email"),
    # The initial load's updated_at lies in the past by nature; lateness does not apply.
    has_late_events=False,
)
# Share of existing customers whose record changes on a given day.
UPDATE_RATE = 0.004
# consent flip, new email, new phone, retention date set (e.g. after an erasure request)
UPDATE_KIND_CUM = np.cumsum((0.45, 0.20, 0.15, 0.20))


def day_batch(world: World, day: int) -> Batch:
    rng = rng_for(world.seed, "crm_customers", day)
    customers, calendar = world.customers, world.calendar
    if day == 0:
        index = np.flatnonzero(customers.signup_day < 0)
        signed_up = calendar.day_epoch(customers.signup_day[index]) \
            + customers.signup_second[index]
        # The initial export shows each record as last edited some time before the start.
        span = calendar.start_epoch - 1 - signed_up
        updated = signed_up + (customers.profile_lag[index] * span).astype(np.int64)
    else:
        new = np.flatnonzero(customers.signup_day == day)
        existing = np.flatnonzero(customers.signup_day < day)
        k = min(len(existing), stochastic_round(UPDATE_RATE * len(existing), rng))
        changed = np.sort(rng.choice(existing, size=k, replace=False))
        _apply_updates(world, changed, day, rng)
        index = np.concatenate([new, changed])
        updated = calendar.day_epoch(day) + np.concatenate([
            customers.signup_second[new].astype(np.int64),
            rng.integers(0, SECONDS_PER_DAY - DAY_END_MARGIN_S, k),
        ])
        order = np.argsort(updated, kind="stable")
        index, updated = index[order], updated[order]
    return Batch(render(world, index, updated), np.zeros(len(index), dtype=bool))


def _apply_updates(world: World, changed: np.ndarray, day: int,
                   rng: np.random.Generator) -> None:
    """Change the customers' current CRM values in place: later days see the new values."""
    customers = world.customers
    kind = np.searchsorted(UPDATE_KIND_CUM, rng.random(len(changed)), side="right")
    flip = changed[kind == 0]
    customers.consent[flip] = ~customers.consent[flip]
    email = changed[kind == 1]
    customers.email_domain[email] = (customers.email_domain[email]
                                     + rng.integers(1, len(EMAIL_DOMAINS), len(email))
                                     ) % len(EMAIL_DOMAINS)
    customers.email_style[email] = rng.integers(0, 5, len(email))
    phone = changed[kind == 2]
    customers.phone_sub[phone] = rng.integers(1_000_000, 9_999_999, len(phone))
    expiry = changed[kind == 3]
    customers.expiry_day[expiry] = day + rng.integers(0, 30, len(expiry))


def render(world: World, index: np.ndarray, updated_epoch: np.ndarray) -> pd.DataFrame:
    """CRM rows of the given customers, with their current values."""
    c, calendar = world.customers, world.calendar
    add, strings = np.strings.add, np.strings
    local = add(add(FIRST_SLUGS[c.first_name[index]], "."),
                add(LAST_SLUGS[c.last_name[index]], c.uniq[index].astype(str)))
    email = add(add(local, "@"), np.array(EMAIL_DOMAINS)[c.email_domain[index]])
    email = _by_style(c.email_style[index], (
        lambda at: email[at],                                  # anna.schmidt12@web.de
        lambda at: strings.title(email[at]),                   # Anna.Schmidt12@Web.De
        lambda at: strings.upper(email[at]),                   # ANNA.SCHMIDT12@WEB.DE
        lambda at: add(add("  ", email[at]), " "),             # surrounding spaces
        lambda at: add(strings.capitalize(email[at]), " "),    # Anna.schmidt12@web.de + space
    ))

    code = np.array(CALLING_CODES)[c.country[index]]
    area = c.phone_area[index].astype(str)
    sub = c.phone_sub[index].astype(str)
    phone = _by_style(c.phone_style[index], (
        lambda at: add(add(add("+", code[at]), add(" ", area[at])), add(" ", sub[at])),
        lambda at: add(add("00", code[at]), add(area[at], sub[at])),
        lambda at: add(add(add("+", code[at]), add("-", area[at])), add("-", sub[at])),
        lambda at: add(add("0", area[at]), add(" ", sub[at])),
        lambda at: add(add(add("+", code[at]), add(" (0)", area[at])), add(" ", sub[at])),
        lambda at: add(add("(0", area[at]), add(") ", sub[at])),
    ))

    country_code = c.country[index]
    country = _by_style(c.country_style[index], (
        lambda at: np.array(COUNTRIES)[country_code[at]],                  # DE
        lambda at: strings.lower(np.array(COUNTRIES))[country_code[at]],   # de
        lambda at: np.array(COUNTRY_NAMES)[country_code[at]],              # Germany
        lambda at: strings.upper(np.array(COUNTRY_NAMES))[country_code[at]],  # GERMANY
    ))

    # Posts always show '@handle'; the CRM sometimes drops the '@' or capitalises.
    with_handle = index[c.has_handle[index]]
    bare = strings.lstrip(c.handles(with_handle), "@")
    handle = np.full(len(index), "", dtype=object)
    handle[c.has_handle[index]] = _by_style(c.handle_style[with_handle], (
        lambda at: add("@", bare[at]),
        lambda at: bare[at],
        lambda at: add("@", strings.capitalize(bare[at])),
    ))

    expiry_day = c.expiry_day[index]
    expiry = np.full(len(index), "", dtype=object)
    has_expiry = expiry_day != NO_EXPIRY
    expiry[has_expiry] = iso_day(calendar.day_epoch(expiry_day[has_expiry]))
    return pd.DataFrame({
        "customer_id": c.ids(index),
        "first_name": np.array(FIRST_NAMES)[c.first_name[index]],
        "last_name": np.array(LAST_NAMES)[c.last_name[index]],
        "email": email,
        "phone": phone,
        "country": country,
        "signup_date": iso_day(calendar.day_epoch(c.signup_day[index])),
        "marketing_consent": np.where(c.consent[index], "true", "false"),
        "data_expiry_date": expiry,
        "social_handle": handle,
        "updated_at": utc_iso(updated_epoch),
    }, columns=list(COLUMNS))


def _by_style(style: np.ndarray,
              variants: tuple[Callable[[np.ndarray], np.ndarray], ...]) -> np.ndarray:
    """Variant k of a value for the rows whose style is k, each built on its rows only."""
    out = np.empty(len(style), dtype=object)
    for k, build in enumerate(variants):
        at = np.flatnonzero(style == k)
        if len(at):
            out[at] = build(at)
    return out
