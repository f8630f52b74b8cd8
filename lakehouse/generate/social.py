"""social_posts (JSON lines): short public posts. Some handles belong to CRM customers (their
social_handle), the rest to strangers; posts mention the poster's favourite product category,
so interests can be mined from text."""

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
from lakehouse.generate.population import A_POSTS, CATEGORIES, World, stranger_handles

COLUMNS = ("post_id", "handle", "post_ts", "text", "likes", "shares")
DEFECTS = DefectSpec(
    wrong_values={"likes": ("many", "1.2k", "n/a"), "shares": ("lots", "a few")},
    missing_fields=("handle", "post_ts", "text"),
)
STRANGER_POSTS_PER_DAY = 0.06
# Text is template + category + ending: commas, quotes and an emoji on purpose.
TEMPLATES = (
    ("Loving my new ", " haul, 10/10 would buy again"),
    ("Best ", " deal this week, grabbed two!"),
    ('Just got the "', '" bundle. Totally worth it'),
    ("Anyone tried the ", " range? Thinking about it"),
    ("Looking for ", " tips, recommendations welcome"),
    ("Still waiting for my ", " order... not impressed"),
    ("Returned the ", " stuff, quality was meh"),
    ("Weekend sorted: ", " shopping 🛍️"),
)
HASHTAGS = ("", "", " #deals", " #haul", " #", " #sale")


def day_batch(world: World, day: int) -> Batch:
    rng = rng_for(world.seed, "social_posts", day)
    c = world.customers
    poster_rate = np.where(c.has_handle & (c.signup_day <= day), A_POSTS[c.archetype], 0.0)
    customer = np.repeat(np.arange(len(c), dtype=np.int64), rng.poisson(poster_rate))
    n_strangers = int(rng.poisson(world.n_stranger_handles * STRANGER_POSTS_PER_DAY))
    stranger = rng.integers(0, world.n_stranger_handles, n_strangers)
    # Late posts: a scraper backfilling the previous days (from strangers, who always exist).
    n_late = stochastic_round(world.late_rate * (len(customer) + n_strangers), rng)
    late_stranger = rng.integers(0, world.n_stranger_handles, n_late)
    post_day = np.concatenate([np.full(len(customer) + n_strangers, day),
                               day - np.minimum(rng.geometric(0.6, n_late), 3)])
    is_late = post_day < day

    handle = np.concatenate([c.handles(customer),
                             stranger_handles(np.concatenate([stranger, late_stranger]))])
    n = len(handle)
    interest = np.concatenate([
        np.where(rng.random(len(customer)) < 0.75, c.interest[customer],
                 rng.integers(0, len(CATEGORIES), len(customer))),
        rng.integers(0, len(CATEGORIES), n - len(customer)),
    ])
    category = np.array(CATEGORIES)[interest]
    template = rng.integers(0, len(TEMPLATES), n)
    prefix = np.array([t[0] for t in TEMPLATES])[template]
    suffix = np.array([t[1] for t in TEMPLATES])[template]
    hashtag = np.array(HASHTAGS)[rng.integers(0, len(HASHTAGS), n)]
    hashtag = np.where(hashtag == " #", np.strings.add(" #", category), hashtag)
    text = np.strings.add(np.strings.add(prefix, category), np.strings.add(suffix, hashtag))

    is_customer = np.arange(n) < len(customer)
    likes = rng.negative_binomial(1.2, 1.2 / (1.2 + np.where(is_customer, 8.0, 15.0)))
    shares = rng.binomial(likes, 0.1)
    epoch = world.calendar.day_epoch(post_day) \
        + rng.integers(0, SECONDS_PER_DAY - DAY_END_MARGIN_S, n)
    order = np.argsort(epoch, kind="stable")
    columns = {
        "post_id": make_ids(f"T{world.calendar.compact(day)}-", np.arange(1, n + 1), 6),
        "handle": handle[order],
        "post_ts": utc_iso(epoch[order]),
        "text": text[order],
        "likes": likes[order].astype(np.int64),
        "shares": shares[order].astype(np.int64),
    }
    return Batch(pd.DataFrame(columns), is_late[order])
