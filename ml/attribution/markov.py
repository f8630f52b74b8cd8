"""Exact, deterministic Markov-chain multi-touch attribution.

The chain is the absorbing Markov chain fitted (by counting) on customer paths; conversion
probability and removal effects come from exact linear solves, not from simulating journeys.

Conventions (each chosen on purpose; the reasons are next to the code that applies them):

* **Repeats collapse.** ``A > A > B`` becomes ``A > B`` before states are built. The reference
  package (ChannelAttribution) skips a transition between two identical consecutive states,
  which at order 1 is exactly this; at order 1 it also changes nothing in the answer, since a
  self-loop only stretches the time spent in a state and absorption probabilities do not depend
  on it. At higher orders we collapse the channels *before* windowing (``A > A > B`` at order 2
  is the single state ``(A, B)``, where the reference would chain ``(A, A) -> (A, B)``): a
  window of one channel repeated says nothing about the order of channels, and this way every
  state is k consecutive *different* touches. Non-consecutive revisits (``A > B > A``) are
  kept: they are real loops and the linear solve handles them exactly. Missing (null) channel
  names are dropped before collapsing.
* **Order-k states** are the sliding windows of k consecutive channels of the collapsed path
  (``A > B > C`` at order 2: ``(A, B) -> (B, C)``). A collapsed path shorter than k is one state
  made of the whole shorter path (``A`` at order 2 is the state ``(A,)``), as in the reference
  package: the journey is kept rather than dropped, and its channels still count.
* **States** are tuples of channel names; ``START`` is the empty tuple (no channel state is
  empty). ``(conversion)`` and ``(null)`` are not states in the tables: they are the terminal
  counts ``conversions`` / ``nulls`` of each last state, so a channel called "(null)" cannot
  collide with them.
* **Weights.** Each path row contributes ``total_conversions + total_null`` journeys to every
  inner transition ``(start) -> s1 -> ... -> sn``, then ``total_conversions`` to
  ``sn -> (conversion)`` and ``total_null`` to ``sn -> (null)``. Fractional weights are kept.
  Rows with no channel left, or with no journey (both weights 0), are skipped: they cannot be
  attributed to any channel. Null or NaN weights count as 0; negative weights are an error.
* **Exact sums.** Counts are summed as decimals with 18 fractional digits (each double is
  taken through its shortest decimal form, or its integer value from 2**53 up, and rounded
  half-up), then turned back into floats.
  Decimal addition is associative, so the totals do not depend on the order of the rows; the
  Spark counter (spark_paths.py) does the same arithmetic, so both give bit-identical tables
  whatever the partitioning. count_transitions_vectorised sums the same decimals as integers
  (int64 parts of the 18-digit values) and matches count_transitions bit for bit.

Solving: with ``Q`` the transition probabilities between transient states (``START`` and the
channel states), ``r[s]`` the probability of ``s -> (conversion)``, ``x = (I - Q)^-1 r`` gives
the probability of ending in (conversion) from each state and ``P = x[START]``. Removing channel
c redirects every state containing c to (null): their rows of Q and r become zero, so their x is
0 and the system reduces to the kept states, ``(I - Q_KK) x_K = r_K``.

Value: ``r_v[s] = value(s -> conversion) / out_weight(s)``, i.e. the probability of converting
from s times the mean conversion value of conversions from s (``conversions(s) / out(s) *
value(s) / conversions(s)``). Solving ``(I - Q) v = r_v`` gives ``V = v[START]``, the expected
conversion value per journey; with every channel kept ``V = total value / journeys`` and
``P = total conversions / journeys`` (flow conservation of a counted chain), which the tests use
as a check. The value removal effect is ``1 - V_c / V``.
"""

from __future__ import annotations

import itertools
import math
import os
import zlib
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from decimal import ROUND_HALF_UP, Context, Decimal
from typing import Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.sparse.linalg import splu

State = tuple[str, ...]
PathRow = tuple[Sequence[str | None], float | None, float | None, float | None]
SolveMethod = Literal["auto", "dense", "sparse", "iterative"]

START: State = ()
ORDERS: tuple[int, ...] = (1, 2, 3, 4)
PATH_COLUMNS = ("channels", "total_conversions", "total_conversion_value", "total_null")

# Up to this many transient states a dense LAPACK solve is as fast as a sparse LU (measured on
# random 8-30 channel chains, single-threaded BLAS: 400 states 4.6 vs 6.1 ms, 900 states 7 ms
# each); above it the sparse LU wins (2,200 states 117 vs 47 ms, 6,200 states 3.8 vs 1.0 s).
DENSE_MAX_STATES = 1000
# Below this many states a removal solve takes well under a millisecond and a thread pool costs
# more than it saves.
PARALLEL_MIN_STATES = 200

# Fractional digits kept when summing counts; must match spark_paths.COUNT_TYPE's scale.
SUM_SCALE = 18
_QUANTUM = Decimal(1).scaleb(-SUM_SCALE)
# Enough digits that no sum of counts is ever rounded (the default context keeps only 28).
_DECIMAL = Context(prec=80, rounding=ROUND_HALF_UP)
_ZERO = Decimal(0)
# From here on every double is a whole number.
_EXACT_INTEGERS = 2.0**53


# --------------------------------------------------------------------------- paths -> states


def collapse_repeats(channels: Iterable[str | None]) -> State:
    """The path without null channels and with consecutive repeats merged (A > A > B -> A > B)."""
    collapsed: list[str] = []
    for channel in channels:
        if channel is None:
            continue
        if not collapsed or collapsed[-1] != channel:
            collapsed.append(channel)
    return tuple(collapsed)


def order_states(channels: Iterable[str | None], order: int) -> list[State]:
    """The order-k states a path visits: sliding windows of k channels of the collapsed path.

    A collapsed path shorter than k is one state made of the whole path; an empty path has none.
    """
    check_order(order)
    collapsed = collapse_repeats(channels)
    if len(collapsed) <= order:
        return [collapsed] if collapsed else []
    return [collapsed[i : i + order] for i in range(len(collapsed) - order + 1)]


def check_order(order: int) -> None:
    """ValueError unless order is one of the supported chain orders (1 to 4)."""
    if isinstance(order, bool) or not isinstance(order, int) or order not in ORDERS:
        raise ValueError(
            f"Markov order must be one of {', '.join(map(str, ORDERS))}, got {order!r}"
        )


def exact_count(value: float | None) -> Decimal:
    """A weight as the decimal both counters sum: shortest repr, 18 digits, half-up.

    None and NaN are 0 (a missing weight means no journeys); infinity is a ValueError.
    This mirrors Spark's ``CAST(double AS DECIMAL(37, 18))``, which also goes through the
    double's shortest decimal string and rounds half-up.
    """
    if value is None:
        return _ZERO
    number = float(value)
    if math.isnan(number):
        return _ZERO
    if math.isinf(number):
        raise ValueError(f"weight must be finite, got {number}")
    if abs(number) >= _EXACT_INTEGERS:
        # Java 17's Double.toString is not always the shortest form above 2**53 (it prints
        # 5.3922346887081062E17 for Python's 5.392234688708106e+17); such doubles are whole
        # numbers, so both sides take their exact integer value instead.
        return Decimal(int(number)).quantize(_QUANTUM, context=_DECIMAL)
    return Decimal(repr(number)).quantize(_QUANTUM, context=_DECIMAL)


def iter_paths(paths: pd.DataFrame | Iterable[PathRow]) -> Iterator[PathRow]:
    """Rows ``(channels, total_conversions, total_conversion_value, total_null)`` of a path table.

    Takes a pandas DataFrame with the columns of PATH_COLUMNS (the same as the Spark input) or
    any iterable of 4-tuples.
    """
    if isinstance(paths, pd.DataFrame):
        check_path_columns(paths)
        rows: Iterable[PathRow] = zip(*(paths[c] for c in PATH_COLUMNS), strict=True)
    else:
        rows = paths
    for row in rows:
        channels = row[0]
        if isinstance(channels, str | bytes):
            raise _string_path_error(channels)
        yield row


def check_path_columns(paths: pd.DataFrame) -> None:
    """ValueError naming the PATH_COLUMNS a path table lacks."""
    missing = [c for c in PATH_COLUMNS if c not in paths.columns]
    if missing:
        raise ValueError(f"path table is missing column(s): {', '.join(missing)}")


def check_path_frame(paths: pd.DataFrame) -> None:
    """iter_paths' checks on a whole DataFrame at once: the columns, then no path as a string."""
    check_path_columns(paths)
    # The types first (a C loop); the rows only when a string is there to be named.
    if _holds_a_string(paths["channels"]):
        for channels in paths["channels"]:
            if isinstance(channels, str | bytes):
                raise _string_path_error(channels)


def _holds_a_string(paths: Iterable) -> bool:
    """Whether any path is a str or bytes (checked on the set of types, not row by row)."""
    return any(issubclass(t, str | bytes) for t in set(map(type, paths)))


def _string_path_error(channels: str | bytes) -> TypeError:
    # A string is a sequence too; taking "A > B" as the channels "A", " ", ">" ... would
    # silently produce nonsense.
    return TypeError(f"channels must be a sequence of channel names, got the string {channels!r}")


def row_weights(
    number: int,
    channels: Sequence[str | None],
    conversions: float | None,
    value: float | None,
    nulls: float | None,
) -> tuple[Decimal, Decimal, Decimal]:
    """The exact (conversions, value, nulls) of path row ``number``; ValueError when negative."""
    conv, val, null = exact_count(conversions), exact_count(value), exact_count(nulls)
    if conv < 0 or val < 0 or null < 0:
        raise ValueError(
            f"path row {number} ({' > '.join(map(str, channels))}) has a negative weight: "
            f"total_conversions={conversions}, total_conversion_value={value}, total_null={nulls}"
        )
    return conv, val, null


# --------------------------------------------------------------------------- counting


@dataclass(frozen=True)
class TransitionCounts:
    """Journey-weighted transition counts of an order-k chain.

    ``transitions[(from_state, to_state)]`` covers ``START -> first state`` and the inner steps;
    ``conversions`` / ``conversion_value`` / ``nulls`` are keyed by the last state of a path
    (every state that ends some path has all three keys, possibly 0.0).
    """

    order: int
    transitions: dict[tuple[State, State], float]
    conversions: dict[State, float]
    conversion_value: dict[State, float]
    nulls: dict[State, float]

    def to_frame(self) -> pd.DataFrame:
        """One row per transition, terminal ones with to_state '(conversion)' / '(null)'."""
        rows = [
            (" > ".join(f) or "(start)", " > ".join(t), w, 0.0)
            for (f, t), w in self.transitions.items()
        ]
        for state in self.conversions:
            label = " > ".join(state)
            rows.append(
                (label, "(conversion)", self.conversions[state], self.conversion_value[state])
            )
            rows.append((label, "(null)", self.nulls[state], 0.0))
        return pd.DataFrame(rows, columns=["from_state", "to_state", "weight", "conversion_value"])


def counts_from_sums(
    order: int,
    inner: dict[tuple[State, State], Decimal],
    terminal: dict[State, tuple[Decimal, Decimal, Decimal]],
) -> TransitionCounts:
    """TransitionCounts from exact decimal sums; keys sorted so every consumer sees one order."""
    transitions = {key: float(inner[key]) for key in sorted(inner)}
    last_states = sorted(terminal)
    return TransitionCounts(
        order=order,
        transitions=transitions,
        conversions={s: float(terminal[s][0]) for s in last_states},
        conversion_value={s: float(terminal[s][1]) for s in last_states},
        nulls={s: float(terminal[s][2]) for s in last_states},
    )


def count_transitions(paths: pd.DataFrame | Iterable[PathRow], order: int) -> TransitionCounts:
    """Transition counts of the order-k chain over a path table (plain Python; the test oracle).

    ``paths`` is a pandas DataFrame with PATH_COLUMNS or an iterable of
    ``(channels, total_conversions, total_conversion_value, total_null)``; one row may be one
    journey or an aggregate of many.
    """
    check_order(order)
    inner: dict[tuple[State, State], Decimal] = {}
    terminal: dict[State, tuple[Decimal, Decimal, Decimal]] = {}
    for number, (channels, conversions, value, nulls) in enumerate(iter_paths(paths), start=1):
        conv, val, null = row_weights(number, channels, conversions, value, nulls)
        journeys = _DECIMAL.add(conv, null)
        states = order_states(channels, order)
        if not states or journeys == 0:
            continue
        previous = START
        for state in states:
            key = (previous, state)
            inner[key] = _DECIMAL.add(inner.get(key, _ZERO), journeys)
            previous = state
        c0, v0, n0 = terminal.get(previous, (_ZERO, _ZERO, _ZERO))
        terminal[previous] = (_DECIMAL.add(c0, conv), _DECIMAL.add(v0, val), _DECIMAL.add(n0, null))
    return counts_from_sums(order, inner, terminal)


# --------------------------------------------------------------------------- vectorised counting

# An exact count (a decimal with SUM_SCALE = 18 fractional digits) is held as three int64
# parts, units and the two 9-digit halves of the fraction, so numpy adds them without rounding.
_HALF_SCALE = 10**9
_SCALE = _HALF_SCALE * _HALF_SCALE
# Every int64 sum stays below this (half of int64's range), so none can overflow.
_SUM_LIMIT = 2.0**62
# The type of a None inside a path (dropped, like collapse_repeats drops it).
_NONE_TYPE = type(None)
# Weight element types whose float() numpy reproduces exactly (it calls float() on them).
_NUMBER_TYPES = (float, int, np.floating, np.integer, _NONE_TYPE)


def count_transitions_vectorised(
    paths: pd.DataFrame | Iterable[PathRow], order: int
) -> TransitionCounts:
    """count_transitions with numpy: the same table, bit for bit, in a fraction of the time.

    The exact decimal sums become integer sums: each distinct weight goes through exact_count
    once and is split into int64 parts (units and the two 9-digit halves of the 18 fractional
    digits) that numpy adds without rounding; each total is put back together as a Python int
    and divided by 10**18 once, which rounds exactly as ``float(Decimal)`` does (both are
    correctly rounded). States are integer keys that sort as the state tuples do, so the
    dicts come out in count_transitions' order. Any table outside the plain case (a path given
    as a string, a negative or infinite weight, channel names that are not strings, weights
    too large for the int64 parts) is left to count_transitions, which counts it or raises its
    own error for the same row.
    """
    check_order(order)
    rows = paths if isinstance(paths, pd.DataFrame) else list(paths)
    counts = _count_plain_paths(rows, order)
    return counts if counts is not None else count_transitions(rows, order)


def _count_plain_paths(rows: pd.DataFrame | list[PathRow], order: int) -> TransitionCounts | None:
    """The vectorised count of a plain path table; None for anything count_transitions must see."""
    columns = _path_columns(rows)
    if columns is None:
        return None
    channels, weights = columns
    encoded = _encode_channels(channels)
    if encoded is None:
        return None
    ranks, lengths, names = encoded
    base = len(names) + 1
    if base**order >= _SUM_LIMIT or not _sums_fit_int64(weights, lengths):
        return None
    parts = [_exact_parts(w) for w in weights]
    if any(p is None for p in parts):
        return None
    conversions, value, nulls = parts
    journeys = conversions + nulls
    steps, lasts = _state_steps(ranks, lengths, journeys.any(axis=1), order, base)
    from_keys, to_keys, step_rows = steps
    last_keys, last_rows = lasts
    (from_keys, to_keys), inner = _sum_by_key((from_keys, to_keys), journeys[step_rows])
    (last_keys,), terminal = _sum_by_key(
        (last_keys,), np.hstack([conversions, value, nulls])[last_rows]
    )

    state_keys = np.unique(np.concatenate([from_keys, to_keys, last_keys]))
    states = _key_states(state_keys, names, base, order)
    from_states = [states[i] for i in np.searchsorted(state_keys, from_keys).tolist()]
    to_states = [states[i] for i in np.searchsorted(state_keys, to_keys).tolist()]
    last_states = [states[i] for i in np.searchsorted(state_keys, last_keys).tolist()]
    step_states = zip(from_states, to_states, strict=True)
    return TransitionCounts(
        order=order,
        transitions=dict(zip(step_states, _part_floats(inner), strict=True)),
        conversions=dict(zip(last_states, _part_floats(terminal[:, 0:3]), strict=True)),
        conversion_value=dict(zip(last_states, _part_floats(terminal[:, 3:6]), strict=True)),
        nulls=dict(zip(last_states, _part_floats(terminal[:, 6:9]), strict=True)),
    )


def _path_columns(
    rows: pd.DataFrame | list[PathRow],
) -> tuple[list, list[np.ndarray]] | None:
    """The channel sequences and the three weight columns as floats (NaN for None), or None."""
    if isinstance(rows, pd.DataFrame):
        if not rows.columns.is_unique or any(c not in rows.columns for c in PATH_COLUMNS):
            return None
        channels = rows["channels"].tolist()
        raw: list = [rows[c] for c in PATH_COLUMNS[1:]]
    else:
        try:
            if set(map(len, rows)) - {len(PATH_COLUMNS)}:
                return None
        except TypeError:
            return None
        columns = list(zip(*rows, strict=True)) or [()] * len(PATH_COLUMNS)
        channels, raw = list(columns[0]), list(columns[1:])
    weights = [_float_weights(column) for column in raw]
    if any(w is None for w in weights):
        return None
    return channels, weights


def _float_weights(column: pd.Series | Sequence) -> np.ndarray | None:
    """A weight column as exact_count reads it, float(value) with None as NaN; None if unsure."""
    if isinstance(column, pd.Series):
        # numpy dtypes only: a nullable column's NA is not None, and float(NA) is an error.
        if isinstance(column.dtype, np.dtype) and column.dtype.kind in "biuf":
            return column.to_numpy(dtype=float)
        if column.dtype != object:
            return None
        column = column.tolist()
    # Strings and Decimals would go through numpy's own parsing, not float(); leave them out.
    if not all(issubclass(t, _NUMBER_TYPES) for t in set(map(type, column))):
        return None
    try:
        return np.array(column, dtype=float).reshape(len(column))
    except (OverflowError, TypeError, ValueError):
        return None


def _encode_channels(channels: list) -> tuple[np.ndarray, np.ndarray, list[str]] | None:
    """Paths as flat channel ranks in sorted name order (-1 for None), path lengths, the names.

    None unless every path is a sequence (not a string) of str or None.
    """
    if _holds_a_string(channels):
        return None
    try:
        lengths = np.fromiter(map(len, channels), dtype=np.int64, count=len(channels))
        flat = np.fromiter(itertools.chain.from_iterable(channels), dtype=object)
        codes, uniques = pd.factorize(flat)
    except TypeError:  # a path without len(), or an unhashable name
        return None
    if len(flat) != lengths.sum():  # a path whose len() disagrees with its items
        return None
    names = uniques.tolist()
    # factorize codes every NA (NaN, pd.NA, ...) -1 as it does None; only None is dropped.
    if not all(isinstance(name, str) for name in names) or any(
        flat[i] is not None for i in np.flatnonzero(codes < 0).tolist()
    ):
        return None
    sorted_names = sorted(names)
    rank = {name: i for i, name in enumerate(sorted_names)}
    rank_of_code = np.array([rank[name] for name in names], dtype=np.int64)
    ranks = np.full(len(codes), -1, dtype=np.int64)
    named = codes >= 0
    ranks[named] = rank_of_code[codes[named]]
    return ranks, lengths, sorted_names


def _sums_fit_int64(weights: list[np.ndarray], lengths: np.ndarray) -> bool:
    """Whether every int64 sum of parts stays below _SUM_LIMIT (False for infinite weights).

    A row adds its weights at most once per channel and once more at its last state, so no
    key's sum exceeds what all rows add together: their units (at most weight + 1 after
    rounding) and their 9-digit halves (below 10**9 each).
    """
    steps = lengths + 1.0
    units = sum(np.where(np.isnan(w), 0.0, np.abs(w)) + 1.0 for w in weights)
    return bool(np.sum(units * steps) < _SUM_LIMIT) and (
        np.sum(steps) * len(weights) * _HALF_SCALE < _SUM_LIMIT
    )


def _exact_parts(values: np.ndarray) -> np.ndarray | None:
    """exact_count of every weight as int64 (units, high, low 9 fractional digits) per row.

    None when a weight is negative: count_transitions raises the error.
    """
    # NaN gets code -1, which picks the zero row appended below: a missing weight counts 0.
    codes, distinct = pd.factorize(values)
    scaled = [int(exact_count(v).scaleb(SUM_SCALE, context=_DECIMAL)) for v in distinct.tolist()]
    if any(s < 0 for s in scaled):
        return None
    parts = np.array(
        [(s // _SCALE, s // _HALF_SCALE % _HALF_SCALE, s % _HALF_SCALE) for s in [*scaled, 0]],
        dtype=np.int64,
    )
    return parts[codes]


def _state_steps(
    ranks: np.ndarray, lengths: np.ndarray, has_journeys: np.ndarray, order: int, base: int
) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Each step ``(from key, to key, row)`` of the counted paths, and each last ``(key, row)``.

    A state's key is its channels' ranks + 1 as base-``base`` digits, left-aligned in ``order``
    digits (zeros after a state shorter than the order), so keys sort as the state tuples do
    (a prefix first); START, the empty tuple, is 0. The semantics are order_states': null
    channels dropped, consecutive repeats collapsed, sliding windows, a path shorter than the
    order one state; rows without journeys or without channels are skipped.
    """
    row_of = np.repeat(np.arange(len(lengths)), lengths)
    kept = (ranks >= 0) & has_journeys[row_of]
    ranks, row_of = ranks[kept], row_of[kept]
    starts_path = np.ones(len(ranks), dtype=bool)
    starts_path[1:] = row_of[1:] != row_of[:-1]
    # The first channel of a path always survives the collapse, so starts_path stays aligned.
    survives = starts_path.copy()
    survives[1:] |= ranks[1:] != ranks[:-1]
    ranks, row_of, starts_path = ranks[survives], row_of[survives], starts_path[survives]

    n = len(ranks)
    first = np.flatnonzero(starts_path)
    path_length = np.diff(np.append(first, n))
    position = np.arange(n) - np.repeat(first, path_length)
    remaining = np.repeat(path_length, path_length) - position  # channels from here to the end
    keys = np.zeros(n, dtype=np.int64)
    for offset in range(order):
        digit = np.zeros(n, dtype=np.int64)
        inside = np.flatnonzero(remaining > offset)
        digit[inside] = ranks[inside + offset] + 1
        keys = keys * base + digit

    # A window starts wherever `order` channels remain; a shorter path is one state.
    is_state = (remaining >= order) | (position == 0)
    state_keys, state_rows, first_state = keys[is_state], row_of[is_state], starts_path[is_state]
    from_keys = np.roll(state_keys, 1)
    from_keys[first_state] = 0
    last_state = np.ones(len(state_keys), dtype=bool)
    last_state[:-1] = first_state[1:]
    return (from_keys, state_keys, state_rows), (state_keys[last_state], state_rows[last_state])


def _sum_by_key(
    keys: tuple[np.ndarray, ...], parts: np.ndarray
) -> tuple[tuple[np.ndarray, ...], np.ndarray]:
    """The distinct key combinations in sorted (lexicographic) order and the column sums of each.

    Hashing the rows into groups and sorting only the groups is about ten times faster than
    sorting the rows (measured on the 200k-path benchmark: 12 vs 125 ms for 0.8M steps).
    """
    if len(parts) == 0:
        return keys, parts
    factorized = [pd.factorize(key) for key in keys]
    # Mixed-radix group codes: below the product of the distinct counts, at most rows**2 for
    # the two keys used here, far inside int64.
    combined = np.zeros(len(parts), dtype=np.int64)
    for codes, distinct in factorized:
        combined = combined * len(distinct) + codes
    group, combinations = pd.factorize(combined)
    sums = np.zeros((len(combinations), parts.shape[1]), dtype=np.int64)
    for column in range(parts.shape[1]):
        np.add.at(sums[:, column], group, parts[:, column])
    group_keys = []
    for _, distinct in reversed(factorized):
        group_keys.append(distinct[combinations % len(distinct)])
        combinations = combinations // len(distinct)
    group_keys.reverse()
    by_key = np.lexsort(group_keys[::-1])
    return tuple(k[by_key] for k in group_keys), sums[by_key]


def _part_floats(parts: np.ndarray) -> list[float]:
    """Summed (units, high, low) parts as floats, rounded once as float(Decimal) rounds."""
    units, high, low = (parts[:, i].astype(object) for i in range(3))
    # Python's int / int is correctly rounded, like float(Decimal) of the same exact value.
    return (((units * _HALF_SCALE + high) * _HALF_SCALE + low) / _SCALE).tolist()


def _key_states(keys: np.ndarray, names: list[str], base: int, order: int) -> list[State]:
    """The state tuple of each state key (digit d is channel names[d - 1]; 0 is no channel)."""
    digits = np.stack(
        [keys // base ** (order - 1 - i) % base for i in range(order)], axis=1
    ).tolist()
    return [tuple(names[d - 1] for d in row if d) for row in digits]


# --------------------------------------------------------------------------- the chain


@dataclass(frozen=True, eq=False)
class MarkovChain:
    """The absorbing chain: transient states (START first), Q, and the two reward vectors."""

    order: int
    states: tuple[State, ...]
    transition_matrix: sp.csr_matrix  # Q: probabilities between transient states
    conversion_rate: np.ndarray  # r[s]: probability of s -> (conversion)
    value_rate: np.ndarray  # r_v[s]: value(s -> conversion) / out_weight(s)
    channels: tuple[str, ...]
    channel_states: dict[str, np.ndarray] = field(repr=False)  # channel -> indices of its states
    total_conversions: float
    total_conversion_value: float
    total_null: float

    @property
    def n_states(self) -> int:
        return len(self.states)


def build_chain(counts: TransitionCounts) -> MarkovChain:
    """The absorbing Markov chain of a transition table (from either counter)."""
    for name, table in (
        ("conversions", counts.conversions),
        ("conversion_value", counts.conversion_value),
        ("nulls", counts.nulls),
    ):
        if any(w < 0 for w in table.values()):
            raise ValueError(f"transition table has negative {name}")
    if any(w < 0 for w in counts.transitions.values()):
        raise ValueError("transition table has negative transition weights")

    channel_states = sorted(
        {s for pair in counts.transitions for s in pair if s != START} | set(counts.conversions)
    )
    states: tuple[State, ...] = (START, *channel_states)
    index = {s: i for i, s in enumerate(states)}
    n = len(states)

    conv = np.zeros(n)
    value = np.zeros(n)
    out = np.zeros(n)
    for s in counts.conversions:
        i = index[s]
        conv[i] = counts.conversions[s]
        value[i] = counts.conversion_value[s]
        out[i] = counts.conversions[s] + counts.nulls[s]
    rows = np.fromiter(
        (index[f] for f, _ in counts.transitions), dtype=np.int64, count=len(counts.transitions)
    )
    cols = np.fromiter(
        (index[t] for _, t in counts.transitions), dtype=np.int64, count=len(counts.transitions)
    )
    weights = np.fromiter(counts.transitions.values(), dtype=float, count=len(counts.transitions))
    np.add.at(out, rows, weights)
    # A state with no journeys out (only possible for START of an empty table) stays all-zero.
    safe_out = np.where(out > 0, out, 1.0)
    q = sp.csr_matrix((weights / safe_out[rows], (rows, cols)), shape=(n, n))

    members: dict[str, list[int]] = {}
    for i, s in enumerate(states):
        for channel in set(s):
            members.setdefault(channel, []).append(i)
    return MarkovChain(
        order=counts.order,
        states=states,
        transition_matrix=q,
        conversion_rate=conv / safe_out,
        value_rate=value / safe_out,
        channels=tuple(sorted(members)),
        channel_states={c: np.asarray(ix, dtype=np.int64) for c, ix in members.items()},
        total_conversions=math.fsum(counts.conversions.values()),
        total_conversion_value=math.fsum(counts.conversion_value.values()),
        total_null=math.fsum(counts.nulls.values()),
    )


def solver_for(
    n_states: int, method: SolveMethod = "auto", dense_max_states: int = DENSE_MAX_STATES
) -> str:
    """The solver a chain of n_states transient states gets: 'dense', 'sparse' or 'iterative'.

    'auto' is a dense LAPACK solve up to ``dense_max_states`` and, above, the iterative solve
    (Richardson iteration on the sparse Q to float precision, falling back to a sparse LU if it
    does not settle): measured at orders 3-4 with 20 channels, the sparse LU fills in to
    millions of entries and takes 14-150 s for the removal solves, the iteration under 1 s,
    with removal effects equal to 6e-15.
    """
    if method not in ("auto", "dense", "sparse", "iterative"):
        raise ValueError(
            f"solve method must be 'auto', 'dense', 'sparse' or 'iterative', got {method!r}"
        )
    if method != "auto":
        return method
    return "dense" if n_states <= dense_max_states else "iterative"


def absorption(
    chain: MarkovChain,
    removed_channel: str | None = None,
    *,
    method: SolveMethod = "auto",
    dense_max_states: int = DENSE_MAX_STATES,
) -> tuple[float, float]:
    """``(P, V)`` from START: conversion probability and expected conversion value per journey.

    With ``removed_channel``, every state containing it is redirected to (null): those states
    drop out of the system and ``(I - Q_KK) x_K = [r_K, r_v_K]`` is solved on the kept ones.
    The solver is picked on the full chain's size, so every solve of one attribution uses the
    same one.
    """
    solver = solver_for(chain.n_states, method, dense_max_states)
    q = chain.transition_matrix
    rewards = np.column_stack([chain.conversion_rate, chain.value_rate])
    if removed_channel is not None:
        if removed_channel not in chain.channel_states:
            raise ValueError(f"channel {removed_channel!r} is not in the chain")
        keep = np.ones(chain.n_states, dtype=bool)
        keep[chain.channel_states[removed_channel]] = False
        kept = np.flatnonzero(keep)  # START (index 0) is never removed
        q = q[kept][:, kept]
        rewards = rewards[kept]
    solution = _solve(q, rewards, solver)
    return float(solution[0, 0]), float(solution[0, 1])


def _solve(q: sp.csr_matrix, rewards: np.ndarray, solver: str) -> np.ndarray:
    """``(I - q)^-1 rewards`` by the named solver."""
    n = q.shape[0]
    if solver == "dense":
        return np.linalg.solve(np.eye(n) - q.toarray(), rewards)
    if solver == "iterative":
        solution = _neumann_solve(q, rewards)
        if solution is not None:
            return solution
    system = (sp.identity(n, format="csc") - q).tocsc()
    # Minimum degree on A^T + A gave about half the fill (and time) of SuperLU's default
    # COLAMD on order-3/4 chains: a chain's transition graph is close to structurally
    # symmetric because most journeys' reverse steps also occur.
    return splu(system, permc_spec="MMD_AT_PLUS_A").solve(rewards)


def _neumann_solve(
    q: sp.csr_matrix, rewards: np.ndarray, *, tolerance: float = 1e-15, max_steps: int = 100_000
) -> np.ndarray | None:
    """``x = r + Q r + Q^2 r + ...`` to float precision, or None if it does not settle.

    Every state of a counted chain reaches an absorbing state, so the spectral radius rho of Q
    is below 1 and the series converges; the terms shrink by about rho per step, so the
    remaining tail is about ``step * rho / (1 - rho)``, estimated from the last two steps.
    Journeys are short, so this takes ~100-150 sparse products where a sparse LU of an order-4
    chain fills in to millions of entries. On None the caller falls back to the LU.
    """
    x = rewards.copy()
    term = rewards
    previous = math.inf
    settled = 0
    for _ in range(max_steps):
        term = q @ term
        x = x + term
        step = float(np.abs(term).max()) if term.size else 0.0
        if step == 0.0:
            return x
        rate = step / previous
        scale = float(np.abs(x).max())
        # Three steps in a row: a single small ratio can be mass passing a bottleneck before
        # it enters a slower loop.
        small = rate < 1.0 and step * rate / (1.0 - rate) <= tolerance * scale
        settled = settled + 1 if small else 0
        if settled == 3:
            return x
        previous = step
    return None


def _workers(max_workers: int | None, n_channels: int, n_states: int, solver: str) -> int:
    if max_workers is not None:
        return max(1, min(max_workers, n_channels))
    # A dense solve already runs on every core through the threaded BLAS; solving several at
    # once oversubscribes it (measured 3x slower with 2 workers on a busy 2-CPU machine).
    if solver == "dense" or n_states < PARALLEL_MIN_STATES:
        return 1
    return max(1, min(os.cpu_count() or 1, n_channels))


def removal_effects(
    chain: MarkovChain,
    *,
    method: SolveMethod = "auto",
    dense_max_states: int = DENSE_MAX_STATES,
    max_workers: int | None = None,
    base: tuple[float, float] | None = None,
) -> pd.DataFrame:
    """Per channel: ``removal_effect = 1 - P_c / P`` and ``value_removal_effect = 1 - V_c / V``.

    The per-channel solves are independent and numpy/scipy release the GIL inside LAPACK and
    SuperLU, so they run on a thread pool (``max_workers=1`` forces sequential; None picks
    the CPU count for sparse solves, sequential for dense ones, whose BLAS is already
    multi-threaded, and for tiny chains). Results do not depend on the worker count.
    Effects are 0 when P (or V) is 0, and clipped to [0, 1] against rounding noise.
    ``base`` is ``(P, V)`` when the caller has already solved the full chain.
    """
    if base is None:
        base = absorption(chain, method=method, dense_max_states=dense_max_states)
    base_p, base_v = base

    def solve(channel: str) -> tuple[float, float]:
        return absorption(chain, channel, method=method, dense_max_states=dense_max_states)

    solver = solver_for(chain.n_states, method, dense_max_states)
    workers = _workers(max_workers, len(chain.channels), chain.n_states, solver)
    if workers == 1:
        removed = [solve(c) for c in chain.channels]
    else:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="markov-removal") as pool:
            removed = list(pool.map(solve, chain.channels))
    return pd.DataFrame(
        {
            "channel": list(chain.channels),
            "removal_effect": [_effect(p, base_p) for p, _ in removed],
            "value_removal_effect": [_effect(v, base_v) for _, v in removed],
        }
    )


def _effect(without: float, base: float) -> float:
    if base <= 0:
        return 0.0
    return min(1.0, max(0.0, 1.0 - without / base))


def share_out(total: float, effects: np.ndarray) -> np.ndarray:
    """``total`` split in proportion to ``effects``; zeros when the effects sum to 0.

    One share absorbs the rounding remainder, so the shares add up to ``total`` exactly
    (as math.fsum sums them) and reports reconcile with the input to the last digit.
    """
    effects = np.asarray(effects, dtype=float)
    denominator = math.fsum(effects)
    if total == 0 or denominator <= 0:
        return np.zeros_like(effects)
    shares = effects / denominator * total
    if math.fsum(shares) == total:
        return shares
    # Re-derive one share as total - (exact sum of the others), rounded once. Taking a share
    # from a lower binade than the total makes its rounding error at most a quarter of the
    # total's ulp, so the exact sum then rounds to the total; the largest such share moves
    # the least relative to its size. Zero shares stay zero.
    total_exponent = math.frexp(total)[1]
    below = [
        i for i, share in enumerate(shares) if share > 0 and math.frexp(share)[1] < total_exponent
    ]
    if below:
        j = max(below, key=lambda i: shares[i])
        fixed = math.fsum([total, *(-shares[i] for i in range(len(shares)) if i != j)])
        if fixed >= 0:
            shares[j] = fixed
    return shares


# --------------------------------------------------------------------------- attribution


@dataclass(frozen=True, eq=False)
class AttributionResult:
    """Attributed conversions and value per channel, and the chain-level numbers behind them."""

    order: int
    n_states: int
    solver: str
    conversion_probability: float  # P
    value_per_journey: float  # V
    total_conversions: float
    total_conversion_value: float
    total_null: float
    # channel, removal_effect, value_removal_effect, total_conversions, total_conversion_value
    channels: pd.DataFrame
    order_choice: OrderChoice | None = None


def attribute(
    counts: TransitionCounts,
    *,
    method: SolveMethod = "auto",
    dense_max_states: int = DENSE_MAX_STATES,
    max_workers: int | None = None,
) -> AttributionResult:
    """Markov attribution of a transition table: removal effects and attributed totals."""
    chain = build_chain(counts)
    p, v = absorption(chain, method=method, dense_max_states=dense_max_states)
    table = removal_effects(
        chain,
        method=method,
        dense_max_states=dense_max_states,
        max_workers=max_workers,
        base=(p, v),
    )
    table["total_conversions"] = share_out(
        chain.total_conversions, table["removal_effect"].to_numpy()
    )
    table["total_conversion_value"] = share_out(
        chain.total_conversion_value, table["value_removal_effect"].to_numpy()
    )
    return AttributionResult(
        order=chain.order,
        n_states=chain.n_states,
        solver=solver_for(chain.n_states, method, dense_max_states),
        conversion_probability=p,
        value_per_journey=v,
        total_conversions=chain.total_conversions,
        total_conversion_value=chain.total_conversion_value,
        total_null=chain.total_null,
        channels=table,
    )


def attribute_paths(
    paths: pd.DataFrame | Iterable[PathRow],
    order: int | None = 1,
    *,
    method: SolveMethod = "auto",
    max_workers: int | None = None,
) -> AttributionResult:
    """Count, solve, attribute; ``order=None`` first picks the order by hold-out log-loss."""
    # iter_paths' checks (columns, then paths given as strings) still come first; a DataFrame
    # is checked by column and counted as it is, not copied into row tuples.
    rows: pd.DataFrame | list[PathRow]
    if isinstance(paths, pd.DataFrame):
        check_path_frame(paths)
        rows = paths
    else:
        rows = list(iter_paths(paths))
    choice = None
    if order is None:
        choice = choose_order(rows)
        order = choice.order
    counts = count_transitions_vectorised(rows, order)
    result = attribute(counts, method=method, max_workers=max_workers)
    if choice is None:
        return result
    return replace(result, order_choice=choice)


# --------------------------------------------------------------------------- order choice


@dataclass(frozen=True, eq=False)
class OrderChoice:
    """The chosen order, the held-out scores of every candidate, and a one-line why."""

    order: int
    scores: pd.DataFrame  # order, log_loss, auc, unseen_share, test_journeys
    reason: str


def path_fold(collapsed: State, folds: int) -> int:
    """Deterministic fold of a path: CRC-32 of its collapsed channels (not Python's salted hash).

    Splitting by collapsed path, not by journey, keeps every journey of a path (and of its
    repeat-variants such as A > A > B) on one side: a journey-level split would put the same
    paths in train and test and always reward the highest order.
    """
    key = "\x1f".join(collapsed).encode("utf-8")
    return zlib.crc32(key) % folds


def choose_order(
    paths: pd.DataFrame | Iterable[PathRow],
    orders: Sequence[int] = ORDERS,
    *,
    folds: int = 5,
    smoothing: float = 1.0,
    tolerance: float = 1e-9,
) -> OrderChoice:
    """Pick the chain order that best predicts held-out conversions (k-fold over paths).

    For a journey that followed states s1..sm and then ended, an order-k chain fitted on the
    training folds predicts ``P(conversion | path) = p(sm -> conv) / (p(sm -> conv) +
    p(sm -> null))``: the product of the inner transition probabilities is common to both
    outcomes and cancels. So the prediction is the conversion share of journeys ending in the
    last order-k state, smoothed towards the training conversion rate with ``smoothing``
    pseudo-journeys; a last state never seen ending a training journey gets the training rate
    (itself kept off 0 and 1 by half a pseudo-journey each way). Higher orders see more history but more unseen states: the hold-out score weighs the two.

    Score: journey-weighted log-loss of the out-of-fold predictions (a proper scoring rule;
    AUC is reported too but ignores calibration and ties). The lowest order within
    ``tolerance`` of the best log-loss wins, provided it beats the training conversion rate
    alone (see _order_verdict); otherwise the lowest order is kept. (The reference package's
    choose_order scores the same last-state prediction, but in-sample, by an AUC penalised for
    the number of states.)
    """
    if folds < 2:
        raise ValueError(f"folds must be at least 2, got {folds}")
    for order in orders:
        check_order(order)
    orders = sorted(set(orders))
    data = []
    for number, (channels, conversions, value, nulls) in enumerate(iter_paths(paths), start=1):
        collapsed = collapse_repeats(channels)
        conv, _, null = row_weights(number, channels, conversions, value, nulls)
        if collapsed and conv + null > 0:
            data.append((collapsed, float(conv), float(null)))
    total = math.fsum(c + n for _, c, n in data)
    if total == 0:
        return _no_journeys_choice(orders)

    fold_of = np.array([path_fold(p, folds) for p, _, _ in data])
    conv = np.array([c for _, c, _ in data])
    null = np.array([n for _, _, n in data])
    records = []
    baseline = math.nan
    for order in orders:
        last = [p[-order:] for p, _, _ in data]  # last state, short paths included as a whole
        predicted, unseen, fallback = _out_of_fold(last, fold_of, conv, null, folds, smoothing)
        if math.isnan(baseline):
            baseline = _log_loss(fallback, conv, null)
        records.append(
            {
                "order": order,
                "log_loss": _log_loss(predicted, conv, null),
                "auc": _weighted_auc(predicted, conv, null),
                "unseen_share": math.fsum(((conv + null) * unseen).tolist()) / total,
                "test_journeys": total,
            }
        )
    return _order_verdict(records, folds, total, tolerance, baseline)


def _no_journeys_choice(orders: Sequence[int]) -> OrderChoice:
    """Nothing to score: keep the lowest order and say so."""
    scores = pd.DataFrame(
        {
            "order": list(orders),
            "log_loss": math.nan,
            "auc": math.nan,
            "unseen_share": math.nan,
            "test_journeys": 0.0,
        }
    )
    return OrderChoice(
        orders[0], scores, f"order {orders[0]}: no journeys to score, lowest order kept"
    )


def _order_verdict(
    records: list[dict], folds: int, total: float, tolerance: float, baseline: float
) -> OrderChoice:
    """The order with the lowest held-out log-loss (ties to the lower order), and why.

    ``baseline`` is the log-loss of the fallback alone (each fold's training conversion rate
    for every journey): an order whose held-out last states are all unseen scores exactly
    this, so it carries no evidence for the order. Only an order that beats it can win;
    when none does, the lowest order is kept.
    """
    scores = pd.DataFrame(records)
    useful = scores[scores["log_loss"] < baseline - tolerance]
    if useful.empty:
        chosen = int(scores["order"].min())
    else:
        best = useful["log_loss"].min()
        chosen = int(useful.loc[useful["log_loss"] <= best + tolerance, "order"].min())
    listing = ", ".join(
        f"order {int(r.order)}: log-loss {r.log_loss:.6f}, AUC {r.auc:.4f}, unseen {r.unseen_share:.1%}"
        for r in scores.itertuples()
    )
    why = (
        "lowest held-out log-loss"
        if not useful.empty
        else f"no order beats the training conversion rate (log-loss {baseline:.6f}), lowest kept"
    )
    reason = (
        f"order {chosen} chosen: {why} ({folds}-fold split by path, "
        f"{total:g} journeys; ties go to the lower order) [training conversion rate alone: "
        f"log-loss {baseline:.6f}; {listing}]"
    )
    return OrderChoice(chosen, scores, reason)


def choose_order_from_sums(
    sums: pd.DataFrame,
    orders: Sequence[int] = ORDERS,
    *,
    folds: int = 5,
    smoothing: float = 1.0,
    tolerance: float = 1e-9,
) -> OrderChoice:
    """choose_order on pre-aggregated data: the same scores without the paths on the driver.

    ``sums`` has one row per ``(order, fold, last_state)`` with the ``conversions`` and
    ``nulls`` of the journeys whose collapsed path has that fold (path_fold) and that last
    order-k state (the whole path when shorter); e.g. summed in Spark. Journeys with the same
    fold and last state get the same out-of-fold prediction, so scoring the groups gives the
    scores of choose_order (up to float rounding of the sums).
    """
    if folds < 2:
        raise ValueError(f"folds must be at least 2, got {folds}")
    for order in orders:
        check_order(order)
    orders = sorted(set(orders))
    missing = [
        c for c in ("order", "fold", "last_state", "conversions", "nulls") if c not in sums.columns
    ]
    if missing:
        raise ValueError(f"order-choice sums are missing column(s): {', '.join(missing)}")
    records = []
    total = 0.0
    baseline = math.nan
    for order in orders:
        part = sums[sums["order"] == order]
        conv = part["conversions"].to_numpy(dtype=float)
        null = part["nulls"].to_numpy(dtype=float)
        total = math.fsum((conv + null).tolist())
        if total == 0:
            break
        last = [tuple(s) for s in part["last_state"]]
        fold_of = part["fold"].to_numpy(dtype=np.int64)
        predicted, unseen, fallback = _out_of_fold(last, fold_of, conv, null, folds, smoothing)
        if math.isnan(baseline):
            baseline = _log_loss(fallback, conv, null)
        records.append(
            {
                "order": order,
                "log_loss": _log_loss(predicted, conv, null),
                "auc": _weighted_auc(predicted, conv, null),
                "unseen_share": math.fsum(((conv + null) * unseen).tolist()) / total,
                "test_journeys": total,
            }
        )
    if total == 0:
        return _no_journeys_choice(orders)
    return _order_verdict(records, folds, total, tolerance, baseline)


def _out_of_fold(
    last: list[State],
    fold_of: np.ndarray,
    conv: np.ndarray,
    null: np.ndarray,
    folds: int,
    smoothing: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Out-of-fold P(conversion) per row, whether its last state was unseen in training (never
    ended a training journey), and the fallback (the training conversion rate) it got then."""
    ids: dict[State, int] = {}
    state_ids = np.array([ids.setdefault(s, len(ids)) for s in last], dtype=np.int64)
    n_states = len(ids)
    # Per (fold, state) sums; a training set is everything minus its fold.
    conv_by = np.zeros((folds, n_states))
    null_by = np.zeros((folds, n_states))
    np.add.at(conv_by, (fold_of, state_ids), conv)
    np.add.at(null_by, (fold_of, state_ids), null)
    conv_all, null_all = conv_by.sum(axis=0), null_by.sum(axis=0)
    predicted = np.empty(len(last))
    unseen = np.zeros(len(last), dtype=bool)
    fallback = np.empty(len(last))
    for f in range(folds):
        rows = np.flatnonzero(fold_of == f)
        if rows.size == 0:
            continue
        train_conv = conv_all - conv_by[f]
        train_null = null_all - null_by[f]
        journeys = train_conv.sum() + train_null.sum()
        # Half a pseudo-journey each way keeps the fallback rate off 0 and 1 (a fold whose
        # training part never converts would otherwise score an infinite loss) and gives a coin
        # flip when there is nothing to train on.
        base = (train_conv.sum() + 0.5) / (journeys + 1.0)
        c, n = train_conv[state_ids[rows]], train_null[state_ids[rows]]
        predicted[rows] = (c + smoothing * base) / (c + n + smoothing)
        unseen[rows] = (c + n) <= 0
        fallback[rows] = base
    return predicted, unseen, fallback


def _log_loss(predicted: np.ndarray, conv: np.ndarray, null: np.ndarray) -> float:
    p = np.clip(predicted, 1e-15, 1 - 1e-15)
    losses = -(conv * np.log(p) + null * np.log1p(-p))
    return math.fsum(losses.tolist()) / math.fsum((conv + null).tolist())


def _weighted_auc(predicted: np.ndarray, conv: np.ndarray, null: np.ndarray) -> float:
    """Probability a converting journey scores above a non-converting one (ties count half)."""
    positives, negatives = conv.sum(), null.sum()
    if positives <= 0 or negatives <= 0:
        return math.nan
    scores, group = np.unique(predicted, return_inverse=True)
    pos = np.bincount(group, weights=conv, minlength=len(scores))
    neg = np.bincount(group, weights=null, minlength=len(scores))
    negatives_below = np.cumsum(neg) - neg
    return float((pos * (negatives_below + neg / 2)).sum() / (positives * negatives))
