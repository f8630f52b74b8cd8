"""The simulated world: customers drawn from planted behaviour archetypes, their devices and
cookies, strangers, and the state that carries from one day to the next.

The initial population is a function of (seed, scale) only; each later day adds that day's
signups from a (seed, day) stream. So day d's world never depends on how many days are asked
for, which keeps earlier files byte-identical when the calendar grows.
"""

from __future__ import annotations

import dataclasses
import unicodedata
from dataclasses import dataclass

import numpy as np

from lakehouse.generate.common import (
    DAY_END_MARGIN_S,
    SECONDS_PER_DAY,
    Calendar,
    ScaleSpec,
    make_ids,
    rng_for,
    scramble,
)

CHANNELS = (
    "paid_search", "organic_search", "email", "display",
    "paid_social", "affiliate", "referral", "direct",
)
CATEGORIES = ("electronics", "fashion", "home", "garden", "sports", "beauty", "toys", "books")

COUNTRIES = ("DE", "FR", "NL", "GB", "US", "ES", "IT", "AT", "BE", "PL")
COUNTRY_NAMES = (
    "Germany", "France", "Netherlands", "United Kingdom", "United States",
    "Spain", "Italy", "Austria", "Belgium", "Poland",
)
COUNTRY_SHARE = (0.35, 0.12, 0.08, 0.12, 0.08, 0.08, 0.07, 0.05, 0.03, 0.02)
CALLING_CODES = ("49", "33", "31", "44", "1", "34", "39", "43", "32", "48")
# Winter UTC offsets (minutes) of the browsers in each country; US splits east/west coast.
COUNTRY_UTC_OFFSET = (60, 60, 60, 0, -300, 60, 60, 60, 60, 60)
US = COUNTRIES.index("US")

# Names include non-ASCII letters, an apostrophe, a comma and double quotes on purpose: the CSV
# writer must quote them and readers must cope.
FIRST_NAMES = (
    "Anna", "Lukas", "Marie", "Jonas", "Sophie", "Leon", "Emma", "Paul", "Léa", "Hugo",
    "Chloé", "Louis", "Sanne", "Daan", "Oliver", "Amelia", "Harry", "Isla", "James", "Olivia",
    "Liam", "Ava", "Noah", "Lucía", "Mateo", "Sofía", "Giulia", "Luca", "Chiara", "Marco",
    "Zoë", "Jürgen", "Łukasz", "Zofia", "Søren", "Björn", "Anaïs", 'Robert "Bob"',
    "Mary-Jane", "Jean-Luc", "François", "Inès", "Elif", "Mehmet", "Fatima", "Mia",
)
LAST_NAMES = (
    "Müller", "Schmidt", "Schneider", "Fischer", "Weber", "Meyer", "Wagner", "Becker",
    "Martin", "Bernard", "Dubois", "Thomas", "Robert", "de Jong", "Jansen", "de Vries",
    "Smith", "Jones", "Taylor", "Brown", "O'Brien", "O'Connor", "Smith, Jr.", "García",
    "Fernández", "López", "Rossi", "Russo", "Bianchi", "Nowak", "Kowalski", "Wiśniewski",
    "Gruber", "Huber", "Peeters", "Janssens", "Johnson", "Williams", "Dvořák", "van der Berg",
    "Nguyen", "Yılmaz",
)
EMAIL_DOMAINS = (
    "gmail.com", "web.de", "gmx.de", "outlook.com", "yahoo.fr", "orange.fr",
    "hotmail.co.uk", "icloud.com", "t-online.de", "proton.me",
)
STRANGER_WORDS = (
    "dealhunter", "techfan", "gardenguru", "stylequeen", "bookworm", "gamerdad",
    "fitlife", "homechef", "outdoorsy", "gadgetgeek", "thriftfinds", "momof3",
)


def _ascii_slug(name: str) -> str:
    """'Wiśniewski' -> 'wisniewski', 'Smith, Jr.' -> 'smithjr': the local part of an email."""
    folded = unicodedata.normalize("NFKD", name.translate(str.maketrans("łŁıøØß", "lLioOs")))
    return "".join(ch for ch in folded.lower() if "a" <= ch <= "z")


FIRST_SLUGS = np.array([_ascii_slug(n.split('"')[0]) for n in FIRST_NAMES])
LAST_SLUGS = np.array([_ascii_slug(n) for n in LAST_NAMES])


@dataclass(frozen=True)
class Archetype:
    """A planted behaviour segment: what K-means should be able to find again."""

    name: str
    share: float                # of the initial population
    signup_share: float         # of the customers who sign up during the calendar
    tenure_days: tuple[int, int]  # initial population: signed up this many days before start
    sessions_per_day: float
    conversion_logit: float     # before channel lifts; see clickstream.CHANNEL_LIFT
    order_value: float          # mean order amount in EUR
    items: float                # mean items per order
    login_rate: float           # share of non-buying sessions that log in
    browse_events: float        # mean events after the landing page
    posts_per_day: float        # social posts, for customers with a handle
    handle_rate: float
    consent_rate: float
    status_mix: tuple[float, float, float]  # completed, cancelled, returned
    discount_rate: float        # orders with a discount code (once the orders schema drifts)
    channel_mix: tuple[float, ...]          # preference over CHANNELS


ARCHETYPES = (
    Archetype("champions", 0.10, 0.05, (365, 2200), 0.40, -3.3, 140.0, 3.2, 0.65, 2.0,
              0.12, 0.50, 0.85, (0.93, 0.03, 0.04), 0.05,
              (0.10, 0.15, 0.25, 0.03, 0.05, 0.02, 0.05, 0.35)),
    Archetype("loyal", 0.20, 0.05, (365, 1800), 0.18, -3.4, 85.0, 2.4, 0.50, 1.6,
              0.06, 0.40, 0.80, (0.90, 0.04, 0.06), 0.08,
              (0.12, 0.18, 0.30, 0.05, 0.05, 0.03, 0.05, 0.22)),
    Archetype("promising_new", 0.12, 0.70, (1, 60), 0.16, -3.5, 60.0, 1.8, 0.40, 1.6,
              0.15, 0.55, 0.70, (0.86, 0.07, 0.07), 0.10,
              (0.25, 0.15, 0.10, 0.12, 0.25, 0.05, 0.05, 0.03)),
    Archetype("at_risk", 0.15, 0.00, (365, 1500), 0.18, -3.3, 75.0, 2.0, 0.35, 1.0,
              0.03, 0.30, 0.55, (0.85, 0.07, 0.08), 0.08,
              (0.10, 0.10, 0.35, 0.25, 0.08, 0.04, 0.03, 0.05)),
    Archetype("hibernating", 0.28, 0.05, (300, 2200), 0.02, -3.6, 45.0, 1.5, 0.20, 0.6,
              0.01, 0.30, 0.40, (0.85, 0.08, 0.07), 0.05,
              (0.08, 0.12, 0.25, 0.35, 0.10, 0.03, 0.02, 0.05)),
    Archetype("bargain_hunters", 0.15, 0.15, (120, 1100), 0.22, -3.5, 28.0, 2.8, 0.45, 2.2,
              0.20, 0.45, 0.90, (0.78, 0.07, 0.15), 0.40,
              (0.18, 0.08, 0.20, 0.08, 0.08, 0.30, 0.04, 0.04)),
)
ARCHETYPE_NAMES = tuple(a.name for a in ARCHETYPES)
AT_RISK = ARCHETYPE_NAMES.index("at_risk")
# at_risk customers go quiet on a day of their own; after it they visit this much less.
QUIET_FACTOR = 0.08
# Signups per day as a share of the initial population (day 1 onwards).
SIGNUP_RATE = 0.003
DEVICE_OWNER_RATE = 0.30
SECOND_DEVICE_RATE = 0.30
FAULTY_DEVICE_RATE = 0.08
NEVER = -1_000_000          # "no such day" in day-valued arrays
# Days a marketing touch keeps lifting conversion (see clickstream.CHANNEL_LIFT).
TOUCH_WINDOW = 7
NO_EXPIRY = 10_000_000

# Primes for scramble(): customer numbers in emails/handles, and cookie numbers.
_UNIQ_MOD, _UNIQ_MUL, _UNIQ_OFF = 10_000_019, 7_368_787, 1_234_567
_COOKIE_MOD, _COOKIE_MUL, _COOKIE_OFF = 100_000_000_003, 48_271_957_331, 9_876_543_210


def _column(values: tuple, dtype: str = "float64") -> np.ndarray:
    return np.array(values, dtype=dtype)


A_SESSIONS = _column(tuple(a.sessions_per_day for a in ARCHETYPES))
A_LOGIT = _column(tuple(a.conversion_logit for a in ARCHETYPES))
A_VALUE = _column(tuple(a.order_value for a in ARCHETYPES))
A_ITEMS = _column(tuple(a.items for a in ARCHETYPES))
A_LOGIN = _column(tuple(a.login_rate for a in ARCHETYPES))
A_BROWSE = _column(tuple(a.browse_events for a in ARCHETYPES))
A_POSTS = _column(tuple(a.posts_per_day for a in ARCHETYPES))
A_HANDLE = _column(tuple(a.handle_rate for a in ARCHETYPES))
A_CONSENT = _column(tuple(a.consent_rate for a in ARCHETYPES))
A_DISCOUNT = _column(tuple(a.discount_rate for a in ARCHETYPES))
A_STATUS_CUM = np.cumsum(np.array([a.status_mix for a in ARCHETYPES]), axis=1)
A_CHANNELS = np.array([a.channel_mix for a in ARCHETYPES])
A_TENURE = np.array([a.tenure_days for a in ARCHETYPES])


@dataclass
class Customers:
    """One row per customer, indexed by position (customer_id C0000001 is position 0).

    Most columns are fixed traits; consent, email_domain, phone_sub and expiry_day are the
    customer's current CRM values and change when the CRM sends an update; last_touch holds the
    last day each channel reached the customer (the memory that drives conversion)."""

    archetype: np.ndarray        # int8 index into ARCHETYPES
    signup_day: np.ndarray       # int32 day relative to the start date (negative: before it)
    signup_second: np.ndarray    # int32 second of the signup day
    profile_lag: np.ndarray      # when, between signup and start, the initial record was edited
    country: np.ndarray
    country_style: np.ndarray    # how the CRM spells the country ("DE", "de", "Germany", ...)
    utc_offset: np.ndarray       # minutes, of the customer's browsers
    first_name: np.ndarray
    last_name: np.ndarray
    uniq: np.ndarray             # unique number used in email and handle
    email_domain: np.ndarray
    email_style: np.ndarray
    phone_area: np.ndarray
    phone_sub: np.ndarray
    phone_style: np.ndarray
    consent: np.ndarray
    expiry_day: np.ndarray
    has_handle: np.ndarray
    handle_style: np.ndarray
    interest: np.ndarray         # favourite product category
    session_rate: np.ndarray
    conversion_logit: np.ndarray
    order_value: np.ndarray
    quiet_day: np.ndarray
    channel_cum: np.ndarray      # (n, len(CHANNELS)) cumulative channel preference
    cookie_start: np.ndarray     # the customer's cookies are cookie_start .. + cookie_count - 1
    cookie_count: np.ndarray
    last_touch: np.ndarray       # (n, len(CHANNELS)) day of last touch per channel

    def __len__(self) -> int:
        return len(self.archetype)

    def concat(self, other: Customers) -> Customers:
        return Customers(**{
            f.name: np.concatenate([getattr(self, f.name), getattr(other, f.name)])
            for f in dataclasses.fields(self)
        })

    @property
    def next_cookie(self) -> int:
        return int(self.cookie_start[-1] + self.cookie_count[-1]) if len(self) else 0

    def ids(self, index: np.ndarray) -> np.ndarray:
        return customer_ids(index)

    def handles(self, index: np.ndarray) -> np.ndarray:
        """Canonical social handle ('@anna_schmidt4821937'), as it appears on social posts."""
        return np.strings.add(
            np.strings.add("@", np.strings.add(FIRST_SLUGS[self.first_name[index]], "_")),
            np.strings.add(LAST_SLUGS[self.last_name[index]], self.uniq[index].astype(str)),
        )


@dataclass
class Devices:
    """IoT devices, each registered to one customer (position in Customers)."""

    owner: np.ndarray
    faulty: np.ndarray
    base_temperature: np.ndarray
    drain: np.ndarray            # battery % per hour
    phase: np.ndarray            # battery offset, so devices are not charged in lockstep

    def __len__(self) -> int:
        return len(self.owner)

    def concat(self, other: Devices) -> Devices:
        return Devices(**{
            f.name: np.concatenate([getattr(self, f.name), getattr(other, f.name)])
            for f in dataclasses.fields(self)
        })


def customer_ids(index: np.ndarray) -> np.ndarray:
    return make_ids("C", np.asarray(index) + 1, 7)


def device_ids(index: np.ndarray) -> np.ndarray:
    return make_ids("D", np.asarray(index) + 1, 7)


def cookie_numbers(index: np.ndarray, stranger: bool | np.ndarray) -> np.ndarray:
    """Customer cookies take even, stranger cookies odd slots of one bijection: never equal."""
    slot = np.asarray(index, dtype=np.int64) * 2 + np.asarray(stranger, dtype=np.int64)
    return scramble(slot, _COOKIE_MOD, _COOKIE_MUL, _COOKIE_OFF)


def stranger_handles(index: np.ndarray) -> np.ndarray:
    index = np.asarray(index, dtype=np.int64)
    words = np.array(STRANGER_WORDS)[index % len(STRANGER_WORDS)]
    return np.strings.add(np.strings.add("@", words),
                          np.strings.add("_", (index + 10_000).astype(str)))


def draw_customers(rng: np.random.Generator, n: int, first_index: int,
                   archetype_p: np.ndarray, signup_day: np.ndarray | None, horizon: int,
                   first_cookie: int) -> Customers:
    """n customers; signup_day None means the initial population (signed up before start)."""
    arch = rng.choice(len(ARCHETYPES), size=n, p=archetype_p).astype(np.int8)
    if signup_day is None:
        low, high = A_TENURE[arch, 0], A_TENURE[arch, 1]
        signup_day = -(low + (rng.random(n) * (high - low)).astype(np.int64))
        is_initial = True
    else:
        is_initial = False
    country = rng.choice(len(COUNTRIES), size=n, p=COUNTRY_SHARE).astype(np.int8)
    west_coast = (country == US) & (rng.random(n) < 0.3)
    utc_offset = np.where(west_coast, -480, np.array(COUNTRY_UTC_OFFSET)[country])

    # Individual spread around the archetype, normalised so the archetype keeps its mean.
    def spread(sigma: float) -> np.ndarray:
        return rng.lognormal(0.0, sigma, n) / np.exp(sigma**2 / 2)

    alpha = A_CHANNELS[arch] * 12.0
    prefs = rng.gamma(alpha)
    prefs /= prefs.sum(axis=1, keepdims=True)
    quiet = np.where(arch == AT_RISK, rng.integers(0, max(1, horizon // 2) + 1, n), NO_EXPIRY)

    expiry_draw = rng.random(n)
    expiry_kind = rng.random(n)
    past = -rng.integers(1, 400, n)
    within = rng.integers(0, max(1, horizon), n)
    future = horizon + rng.integers(30, 700, n)
    # Some retention dates already passed (initial population only), some fall inside the
    # calendar, most are far ahead: the retention job has work on day one and later.
    expiry = np.where(expiry_kind < 0.45, past if is_initial else future,
                      np.where(expiry_kind < 0.70, within, future))
    expiry = np.where(expiry_draw < (0.08 if is_initial else 0.02), expiry, NO_EXPIRY)

    session_rate = A_SESSIONS[arch] * spread(0.35)
    # The initial population has been browsing before the start date: give it the touches of
    # the last window, or conversion on the first days would lack any channel memory.
    expected_touches = session_rate[:, None] * TOUCH_WINDOW * prefs
    touched = (rng.random(prefs.shape) < 1 - np.exp(-expected_touches)) & is_initial
    last_touch = np.where(touched, -rng.integers(1, TOUCH_WINDOW + 1, prefs.shape), NEVER)

    cookie_count = (1 + (rng.random(n) < 0.35) + (rng.random(n) < 0.10)).astype(np.int8)
    cookie_start = first_cookie + np.cumsum(cookie_count, dtype=np.int64) - cookie_count
    index = first_index + np.arange(n, dtype=np.int64)
    return Customers(
        archetype=arch,
        signup_day=np.asarray(signup_day, dtype=np.int32),
        signup_second=rng.integers(0, SECONDS_PER_DAY - DAY_END_MARGIN_S, n).astype(np.int32),
        profile_lag=rng.random(n).astype(np.float32),
        country=country,
        country_style=rng.choice(4, size=n, p=(0.6, 0.2, 0.15, 0.05)).astype(np.int8),
        utc_offset=utc_offset.astype(np.int16),
        first_name=rng.integers(0, len(FIRST_NAMES), n).astype(np.int16),
        last_name=rng.integers(0, len(LAST_NAMES), n).astype(np.int16),
        uniq=scramble(index, _UNIQ_MOD, _UNIQ_MUL, _UNIQ_OFF),
        email_domain=rng.integers(0, len(EMAIL_DOMAINS), n).astype(np.int8),
        email_style=rng.choice(5, size=n, p=(0.6, 0.15, 0.05, 0.12, 0.08)).astype(np.int8),
        phone_area=rng.integers(20, 990, n).astype(np.int16),
        phone_sub=rng.integers(1_000_000, 9_999_999, n).astype(np.int32),
        phone_style=rng.integers(0, 6, n).astype(np.int8),
        consent=rng.random(n) < A_CONSENT[arch],
        expiry_day=expiry.astype(np.int32),
        has_handle=rng.random(n) < A_HANDLE[arch],
        handle_style=rng.choice(3, size=n, p=(0.7, 0.2, 0.1)).astype(np.int8),
        interest=rng.integers(0, len(CATEGORIES), n).astype(np.int8),
        session_rate=session_rate.astype(np.float32),
        conversion_logit=(A_LOGIT[arch] + rng.normal(0.0, 0.3, n)).astype(np.float32),
        order_value=(A_VALUE[arch] * spread(0.25)).astype(np.float32),
        quiet_day=quiet.astype(np.int32),
        channel_cum=np.cumsum(prefs, axis=1).astype(np.float32),
        cookie_start=cookie_start,
        cookie_count=cookie_count,
        last_touch=last_touch.astype(np.int32),
    )


def draw_devices(rng: np.random.Generator, first_owner: int, n_customers: int) -> Devices:
    owns = rng.random(n_customers) < DEVICE_OWNER_RATE
    count = 1 + (rng.random(n_customers) < SECOND_DEVICE_RATE)
    owner = np.repeat(first_owner + np.arange(n_customers, dtype=np.int64)[owns], count[owns])
    k = len(owner)
    return Devices(
        owner=owner,
        faulty=rng.random(k) < FAULTY_DEVICE_RATE,
        base_temperature=rng.normal(21.0, 2.0, k),
        drain=rng.uniform(0.05, 0.4, k),
        phase=rng.uniform(0.0, 92.0, k),
    )


@dataclass
class World:
    """Everything the per-day source generators read, plus state carried between days."""

    seed: int
    scale: ScaleSpec
    calendar: Calendar
    late_rate: float
    customers: Customers
    devices: Devices
    n_stranger_cookies: int
    n_stranger_handles: int

    @property
    def drift_day(self) -> int:
        return self.scale.drift_day

    def add_signups(self, day: int) -> np.ndarray:
        """Customers who sign up on this day join the world; returns their positions."""
        if day < 1:
            return np.empty(0, dtype=np.int64)
        rng = rng_for(self.seed, "signups", day)
        n = int(rng.poisson(self.scale.customers * SIGNUP_RATE))
        first = len(self.customers)
        p = np.array([a.signup_share for a in ARCHETYPES])
        new = draw_customers(rng, n, first, p / p.sum(), np.full(n, day), self.scale.days,
                             self.customers.next_cookie)
        self.customers = self.customers.concat(new)
        self.devices = self.devices.concat(draw_devices(rng, first, n))
        return first + np.arange(n, dtype=np.int64)


def build_world(seed: int, scale: ScaleSpec, calendar: Calendar, late_rate: float) -> World:
    """The initial population: a function of (seed, scale) only."""
    rng = rng_for(seed, "population", scale.customers)
    p = np.array([a.share for a in ARCHETYPES])
    customers = draw_customers(rng, scale.customers, 0, p / p.sum(), None, scale.days, 0)
    devices = draw_devices(rng, 0, scale.customers)
    return World(seed, scale, calendar, late_rate, customers, devices,
                 n_stranger_cookies=max(50, scale.customers // 2),
                 n_stranger_handles=max(20, scale.customers // 4))

