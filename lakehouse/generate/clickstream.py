"""clickstream (JSON lines): web sessions of customers and strangers, one object per event.

A session enters through one marketing touchpoint (its first event carries channel and
campaign), browses, may log in (customer_id is set from the login event on; before it, and in
sessions without a login, the visitor is known only by cookie) and may end in add_to_cart and
checkout. Whether it converts depends on the customer's archetype and on which channels
reached the customer recently: email and paid search lift conversion a lot, display barely.
That is the signal the Markov attribution has to recover.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from lakehouse.generate.common import (
    DAY_END_MARGIN_S,
    SECONDS_PER_DAY,
    make_ids,
    offset_iso,
    pick,
    rng_for,
    stochastic_round,
    zero_pad,
)
from lakehouse.generate.defects import Batch, DefectSpec
from lakehouse.generate.population import (
    A_BROWSE,
    A_LOGIN,
    CATEGORIES,
    CHANNELS,
    COUNTRY_SHARE,
    COUNTRY_UTC_OFFSET,
    QUIET_FACTOR,
    TOUCH_WINDOW,
    Customers,
    World,
    cookie_numbers,
    customer_ids,
)

COLUMNS = (
    "event_id", "event_ts", "cookie_id", "customer_id", "session_id", "page", "event_type",
    "channel", "campaign",
)
DRIFT_FIELD = "user_agent"
DEFECTS = DefectSpec(
    wrong_values={"event_ts": ("N/A", "yesterday", "2026-13-45T25:61:00Z", "03/01/2026 10:15")},
    missing_fields=("event_ts", "cookie_id", "session_id", "event_type"),
    drift_field=DRIFT_FIELD,
)

# Logit lift of conversion when a channel reached the customer within TOUCH_WINDOW days
# (the current session included). Display alone rarely converts; email and search do.
CHANNEL_LIFT = {
    "paid_search": 1.1, "organic_search": 0.5, "email": 1.4, "display": 0.1,
    "paid_social": 0.35, "affiliate": 0.8, "referral": 0.5, "direct": 0.7,
}
LIFT = np.array([CHANNEL_LIFT[ch] for ch in CHANNELS])
STRANGER_SESSION_SHARE = 0.2
# Strangers are not on the mailing list.
STRANGER_CHANNEL_CUM = np.cumsum((0.20, 0.30, 0.0, 0.20, 0.15, 0.05, 0.08, 0.02))
STRANGER_BROWSE = 0.8
WEEKEND_FACTOR = 1.15
MEAN_GAP_S = 40
ABANDON_RATE = 0.10
MAX_BROWSE = 25
# Share of events whose timestamp the server wrote in UTC ('Z'); the rest carry the browser's
# local offset ('+01:00', '-05:00', ...).
UTC_Z_SHARE = 0.4
CAMPAIGNS = {
    "paid_search": ("brand_search", "generic_search"),
    "email": ("newsletter_weekly", "winback", "welcome_series", "cart_reminder"),
    "display": ("retargeting", "prospecting_banner"),
    "paid_social": ("social_winter_sale", "social_new_arrivals"),
    "affiliate": ("cashback_partner", "voucher_partner"),
}
USER_AGENTS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_2 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/18.2 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/18.1 Safari/605.1.15",
    "Mozilla/5.0 (Linux; Android 15; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0 Mobile Safari/537.36",
    "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
    "ShopApp/4.12.0 (Android 14; SM-S918B)",
)
PAGE_VIEW, PRODUCT_VIEW, SEARCH, LOGIN, ADD_TO_CART, CHECKOUT = range(6)
EVENT_TYPES = np.array(["page_view", "product_view", "search", "login", "add_to_cart",
                        "checkout"])
BROWSE_CUM = np.cumsum((0.38, 0.50, 0.12))  # page_view, product_view, search

_CAMPAIGN_LIST = np.array([""] + [name for ch in CHANNELS for name in CAMPAIGNS.get(ch, ())])
_CAMPAIGN_COUNT = np.array([len(CAMPAIGNS.get(ch, ())) for ch in CHANNELS])
_CAMPAIGN_FIRST = 1 + np.cumsum(_CAMPAIGN_COUNT) - _CAMPAIGN_COUNT
_CATEGORY_NAMES = np.array(CATEGORIES)
_CHANNEL_NAMES = np.array(CHANNELS, dtype=object)


@dataclass
class Conversions:
    """Sessions that ended in a checkout: the orders generator turns each into an order."""

    customer: np.ndarray
    checkout_epoch: np.ndarray
    is_late: np.ndarray


@dataclass
class _Sessions:
    customer: np.ndarray   # position in Customers, -1 for strangers
    day: np.ndarray        # day the session happened (earlier than today when late)
    is_late: np.ndarray
    cookie: np.ndarray     # cookie index (customer or stranger numbering)

    @property
    def is_stranger(self) -> np.ndarray:
        return self.customer < 0


def day_batch(world: World, day: int) -> tuple[Batch, Conversions]:
    rng = rng_for(world.seed, "clickstream", day)
    sessions = _visits(world, day, rng)
    channel = _channels(world.customers, sessions, rng)
    raw_start = _diurnal_seconds(rng, len(sessions.day))
    converted = _conversions(world.customers, sessions, channel, raw_start, rng)
    return _events(world, day, sessions, channel, raw_start, converted, rng)


def _visits(world: World, day: int, rng: np.random.Generator) -> _Sessions:
    """Who visits today: customers by their rate, late sessions from earlier days delivered
    only now (an app's offline buffer), and strangers who never log in."""
    c = world.customers
    weekend = WEEKEND_FACTOR if world.calendar.weekday(day) >= 5 else 1.0
    rate = np.where(day >= c.quiet_day, QUIET_FACTOR, 1.0) * c.session_rate * weekend
    rate = np.where(c.signup_day <= day, rate, 0.0)
    customer = np.repeat(np.arange(len(c), dtype=np.int64), rng.poisson(rate))
    n_strangers = int(rng.poisson(STRANGER_SESSION_SHARE / (1 - STRANGER_SESSION_SHARE)
                                  * len(customer)))
    n_late = stochastic_round(world.late_rate * (len(customer) + n_strangers), rng)
    lag = np.minimum(rng.geometric(0.6, n_late), 3)
    late_customer = np.empty(n_late, dtype=np.int64)
    for lag_days in (1, 2, 3):
        at = np.flatnonzero(lag == lag_days)
        weight = np.where(c.signup_day <= day - lag_days, c.session_rate, 0.0)
        if not weight.sum():
            weight = (c.signup_day < 0).astype(np.float64)  # the initial population
        if len(at):
            late_customer[at] = rng.choice(len(c), size=len(at), p=weight / weight.sum())
    customer = np.concatenate([customer, late_customer])
    n_customer = len(customer)
    own_cookie = c.cookie_start[customer] + (rng.random(n_customer)
                                             * c.cookie_count[customer]).astype(np.int64)
    return _Sessions(
        customer=np.concatenate([customer, np.full(n_strangers, -1)]),
        day=np.concatenate([np.full(n_customer - n_late, day), day - lag,
                            np.full(n_strangers, day)]).astype(np.int64),
        is_late=np.concatenate([np.zeros(n_customer - n_late, bool), np.ones(n_late, bool),
                                np.zeros(n_strangers, bool)]),
        cookie=np.concatenate([own_cookie,
                               rng.integers(0, world.n_stranger_cookies, n_strangers)]),
    )


def _channels(c: Customers, s: _Sessions, rng: np.random.Generator) -> np.ndarray:
    u = rng.random(len(s.day))
    known = ~s.is_stranger
    channel = pick(STRANGER_CHANNEL_CUM, u)
    channel[known] = pick(c.channel_cum[s.customer[known]], u[known])
    return channel


def _diurnal_seconds(rng: np.random.Generator, n: int) -> np.ndarray:
    """Start second within the day: an afternoon and an evening peak."""
    afternoon = rng.random(n) < 0.55
    seconds = np.where(afternoon, rng.normal(13 * 3600, 3 * 3600, n),
                       rng.normal(20.5 * 3600, 1.7 * 3600, n))
    return np.mod(seconds, SECONDS_PER_DAY).astype(np.int64)


def _conversions(c: Customers, s: _Sessions, channel: np.ndarray, raw_start: np.ndarray,
                 rng: np.random.Generator) -> np.ndarray:
    """Which sessions convert: archetype base plus a lift for every channel that touched the
    customer within the window, counting earlier sessions today and this one. Also records
    today's touches in the customers' memory (last_touch)."""
    known = np.flatnonzero(~s.is_stranger)
    converted = np.zeros(len(s.day), dtype=bool)
    if not len(known):
        return converted
    order = known[np.lexsort((raw_start[known], s.day[known], s.customer[known]))]
    cust, days, chan = s.customer[order], s.day[order], channel[order]
    onehot = np.zeros((len(order), len(CHANNELS)), dtype=np.int32)
    onehot[np.arange(len(order)), chan] = 1
    running = np.cumsum(onehot, axis=0)
    first_of_customer = np.r_[True, cust[1:] != cust[:-1]]
    group_start = np.maximum.accumulate(np.where(first_of_customer, np.arange(len(order)), 0))
    touched_today = (running - running[group_start] + onehot[group_start]) > 0
    last = c.last_touch[cust]
    touched_before = (last >= (days - TOUCH_WINDOW)[:, None]) & (last <= days[:, None])
    logit = c.conversion_logit[cust] + (touched_today | touched_before) @ LIFT
    converted[order] = rng.random(len(order)) < 1.0 / (1.0 + np.exp(-logit))
    np.maximum.at(c.last_touch, (cust, chan), days.astype(np.int32))
    return converted


def _events(world: World, day: int, s: _Sessions, channel: np.ndarray, raw_start: np.ndarray,
            converted: np.ndarray, rng: np.random.Generator) -> tuple[Batch, Conversions]:
    c, calendar = world.customers, world.calendar
    n_sessions = len(s.day)
    known = ~s.is_stranger
    arch = c.archetype[np.where(known, s.customer, 0)]
    logged_in = converted | (known & (rng.random(n_sessions) < A_LOGIN[arch]))
    browse = np.minimum(rng.poisson(np.where(known, A_BROWSE[arch], STRANGER_BROWSE)),
                        MAX_BROWSE)
    abandoned = ~converted & (rng.random(n_sessions) < ABANDON_RATE)
    tail = 2 * converted + abandoned          # add_to_cart + checkout, or a lone add_to_cart
    n_events = 1 + browse + logged_in + tail
    login_pos = 1 + (rng.random(n_sessions) * (n_events - 1 - tail)).astype(np.int64)

    # One row per event: session index and position within the session.
    sid = np.repeat(np.arange(n_sessions), n_events)
    first = np.cumsum(n_events) - n_events
    pos = np.arange(len(sid)) - first[sid]
    is_last = pos == n_events[sid] - 1
    etype = pick(BROWSE_CUM, rng.random(len(sid)))
    etype[pos == 0] = PAGE_VIEW
    etype[converted[sid] & is_last] = CHECKOUT
    etype[converted[sid] & (pos == n_events[sid] - 2)] = ADD_TO_CART
    etype[abandoned[sid] & is_last] = ADD_TO_CART
    etype[logged_in[sid] & (pos == login_pos[sid])] = LOGIN
    signed_in = logged_in[sid] & (pos >= login_pos[sid])

    gap = np.clip(rng.exponential(MEAN_GAP_S, len(sid)), 2, 600).astype(np.int64)
    gap[pos == 0] = 0
    elapsed = np.cumsum(gap)
    elapsed -= elapsed[first][sid]
    duration = elapsed[first + n_events - 1]
    # Every session ends well before midnight UTC: a record of day d lies on day d.
    start = np.minimum(raw_start, SECONDS_PER_DAY - DAY_END_MARGIN_S - duration)
    session_epoch = calendar.day_epoch(s.day) + start
    epoch = session_epoch[sid] + elapsed

    # Time zone per session: the browser's (from the customer's country), or the server's Z.
    stranger_country = pick(np.cumsum(COUNTRY_SHARE), rng.random(n_sessions))
    offset = np.where(known, c.utc_offset[np.where(known, s.customer, 0)],
                      np.array(COUNTRY_UTC_OFFSET)[stranger_country])
    as_z = rng.random(n_sessions) < UTC_Z_SHARE

    campaign = _CAMPAIGN_LIST[np.where(
        _CAMPAIGN_COUNT[channel] > 0,
        _CAMPAIGN_FIRST[channel] + (rng.random(n_sessions) * _CAMPAIGN_COUNT[channel])
        .astype(np.int64), 0)]
    interest = np.where(known & (rng.random(n_sessions) < 0.6),
                        c.interest[np.where(known, s.customer, 0)],
                        rng.integers(0, len(CATEGORIES), n_sessions))
    page = _pages(etype, pos, sid, channel, campaign, interest, rng)

    numbers = cookie_numbers(s.cookie, s.is_stranger)
    cookie = make_ids("ck", numbers, 11)
    customer = np.full(len(sid), None, dtype=object)
    customer[signed_in] = customer_ids(s.customer[sid[signed_in]])
    entry = pos == 0
    channel_col = np.full(len(sid), None, dtype=object)
    channel_col[entry] = _CHANNEL_NAMES[channel[sid[entry]]]
    campaign_col = np.full(len(sid), None, dtype=object)
    has_campaign = entry & (campaign[sid] != "")
    campaign_col[has_campaign] = campaign[sid[has_campaign]]

    order = np.lexsort((np.arange(len(sid)), epoch))   # time order; ties keep session order
    session_rank = np.empty(n_sessions, dtype=np.int64)
    session_rank[np.argsort(session_epoch, kind="stable")] = np.arange(n_sessions)
    stamp = calendar.compact(day)
    sid_o = sid[order]
    columns = {
        "event_id": make_ids(f"E{stamp}", np.arange(1, len(sid) + 1), 8),
        "event_ts": offset_iso(epoch[order], offset[sid_o], as_z[sid_o]),
        "cookie_id": cookie[sid_o],
        "customer_id": customer[order],
        "session_id": make_ids(f"S{stamp}", session_rank[sid_o] + 1, 7),
        "page": page[order],
        "event_type": EVENT_TYPES[etype[order]],
        "channel": channel_col[order],
        "campaign": campaign_col[order],
    }
    if day >= world.drift_day:
        columns[DRIFT_FIELD] = np.array(USER_AGENTS)[numbers % len(USER_AGENTS)][sid_o]
    conversions = Conversions(
        customer=s.customer[converted],
        checkout_epoch=session_epoch[converted] + duration[converted],
        is_late=s.is_late[converted],
    )
    return Batch(pd.DataFrame(columns), s.is_late[sid_o]), conversions


def _pages(etype: np.ndarray, pos: np.ndarray, sid: np.ndarray, channel: np.ndarray,
           campaign: np.ndarray, interest: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    add = np.strings.add
    n = len(etype)
    category = _CATEGORY_NAMES[np.where(rng.random(n) < 0.7, interest[sid],
                                        rng.integers(0, len(CATEGORIES), n))]
    page = np.full(n, "", dtype=object)
    browse_pages = {
        PAGE_VIEW: add("/category/", category),
        PRODUCT_VIEW: add("/product/P", zero_pad(rng.integers(1, 20_000, n), 5)),
        SEARCH: add("/search?q=", category),
    }
    for kind, pages in browse_pages.items():
        page[etype == kind] = pages[etype == kind]
    page[etype == LOGIN] = "/login"
    page[etype == ADD_TO_CART] = "/cart"
    page[etype == CHECKOUT] = "/checkout"
    # The landing page follows the touchpoint: search lands on a category, campaigns on their
    # landing page, referrals on a blog post, direct on the home page.
    entry = np.flatnonzero(pos == 0)
    ch = np.array(CHANNELS)[channel[sid[entry]]]
    landing = np.where(np.isin(ch, ("paid_search", "organic_search")),
                       add("/category/", category[entry]),
                       np.where(ch == "referral", add(add("/blog/", category[entry]), "-guide"),
                                np.where(ch == "direct", "/",
                                         add("/landing/", campaign[sid[entry]]))))
    page[entry] = landing
    return page
