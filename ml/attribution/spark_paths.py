"""Markov transition counting in Spark: paths in, a bounded transition table out.

Input: a DataFrame with ``channels: array<string>``, ``total_conversions: double``,
``total_conversion_value: double`` and ``total_null: double``, one row per journey or per
aggregated path. Everything up to the grouped transition table runs in Spark with built-in
higher-order functions (no Python UDF); only that table, whose size is bounded by the square of
the number of states and not by the number of journeys, reaches the driver.

The conventions are those of markov.py (null channels dropped, consecutive repeats collapsed,
sliding order-k windows, a path shorter than k is one state, START is the empty array, rows
without a channel or without journeys skipped, null/NaN weights are 0, negative weights fail).

Determinism: weights are summed as DECIMAL(38, 18), not as doubles. Decimal addition is exact,
so the sums do not depend on how rows are spread over partitions or in which order the partial
aggregates merge; a double ``sum`` would differ in the last bits between ``repartition(1)`` and
``repartition(7)``. The plain-Python counter sums the same decimals, so both produce
bit-identical TransitionCounts. Limit: a single weight below 9.2e18 (a bigint) and a summed one below 1e20.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import ArrayType, DecimalType, StringType

from ml.attribution.markov import (
    PATH_COLUMNS,
    START,
    SUM_SCALE,
    State,
    TransitionCounts,
    check_order,
    counts_from_sums,
)

# One weight as a decimal: 19 integer digits. Adding two of them gives DECIMAL(38, 18) with no
# loss; casting straight to (38, 18) would make the sum DECIMAL(38, 17) (Spark drops a
# fractional digit when the precision would exceed 38) and break the match with markov.py.
WEIGHT_TYPE = DecimalType(37, SUM_SCALE)
COUNT_TYPE = DecimalType(38, SUM_SCALE)
STATE_TYPE = ArrayType(StringType())


def collapsed_channels(channels: Column) -> Column:
    """Drop consecutive repeats of a channel array (A, A, B -> A, B).

    ``channels`` should be a column reference, not an expression: it is read once per element.
    ``get`` (0-based) returns NULL before the first element, and ``True | NULL`` is true, so the
    first channel is always kept.
    """
    return F.filter(channels, lambda x, i: (i == 0) | (x != F.get(channels, i - 1)))


def order_k_states(collapsed: Column, order: int) -> Column:
    """The sliding windows of ``order`` channels of a non-empty collapsed path.

    ``greatest(n - k, 0)`` makes a path shorter than k a single window, and ``slice`` of k
    elements from position 1 of a shorter array returns the whole array: the short-path
    convention of markov.order_states.
    """
    check_order(order)
    last_start = F.greatest(F.size(collapsed) - order, F.lit(0))
    return F.transform(F.sequence(F.lit(0), last_start), lambda i: F.slice(collapsed, i + 1, order))


def _weight(name: str) -> Column:
    """A weight column as an exact decimal: null/NaN -> 0, negative -> the job fails, naming it."""
    value = F.coalesce(F.nanvl(F.col(name).cast("double"), F.lit(0.0)), F.lit(0.0))
    checked = F.when(
        value < 0,
        F.raise_error(
            F.concat(
                F.lit(f"negative {name} in path '"),
                F.array_join(F.col("channels"), " > ", "<null>"),
                F.lit("'"),
            )
        ),
    ).otherwise(value)
    # Above 2**53 a double is a whole number, and Java 17's Double.toString (which the decimal
    # cast goes through) is not always the shortest form there: take the exact integer, as
    # markov.exact_count does. Spark evaluates only the branch a row takes.
    return F.when(
        F.abs(checked) >= F.lit(2.0**53), checked.cast("bigint").cast(WEIGHT_TYPE)
    ).otherwise(checked.cast(WEIGHT_TYPE))


def with_path_states(paths_df: DataFrame, order: int, by: Sequence[str] = ()) -> DataFrame:
    """Columns ``states`` (array of order-k states) and exact decimal weights, one row per path.

    Rows with no channel left or with no journeys are dropped (see markov.py). Columns named in
    ``by`` (group keys such as a segment or a bootstrap replicate) are carried through.
    """
    check_order(order)
    by = list(by)
    missing = [c for c in (*PATH_COLUMNS, *by) if c not in paths_df.columns]
    if missing:
        raise ValueError(f"paths DataFrame is missing column(s): {', '.join(missing)}")
    weighted = paths_df.select(
        *by,
        F.filter(F.col("channels"), lambda x: x.isNotNull()).alias("present"),
        _weight("total_conversions").alias("conversions"),
        _weight("total_conversion_value").alias("value"),
        _weight("total_null").alias("nulls"),
    )
    collapsed = weighted.select(
        *by,
        collapsed_channels(F.col("present")).alias("collapsed"),
        "conversions",
        "value",
        "nulls",
        (F.col("conversions") + F.col("nulls")).cast(COUNT_TYPE).alias("journeys"),
    ).where((F.size("collapsed") > 0) & (F.col("journeys") > 0))
    return collapsed.select(
        *by,
        order_k_states(F.col("collapsed"), order).alias("states"),
        "journeys",
        *(F.col(c).cast(COUNT_TYPE).alias(c) for c in ("conversions", "value", "nulls")),
    )


def transition_sums_df(paths_df: DataFrame, order: int, by: Sequence[str] = ()) -> DataFrame:
    """The grouped transition table of the order-k chain, exact decimal sums.

    Columns: the ``by`` keys (one chain per distinct key), ``from_state`` (array<string>,
    empty for START), ``to_state`` (array<string>; NULL
    for the terminal row of a last state), ``journeys`` (inner transition weight),
    ``conversions``, ``value``, ``nulls`` (terminal weights, 0 on inner rows).
    """
    by = list(by)
    states_df = with_path_states(paths_df, order, by)
    zero = F.lit(0).cast(COUNT_TYPE)
    start = F.array().cast(STATE_TYPE)
    states = F.col("states")
    inner = F.transform(
        F.sequence(F.lit(0), F.size(states) - 1),
        lambda j: F.struct(
            # get(states, -1) is NULL: the first step comes from START.
            F.coalesce(F.get(states, j - 1), start).alias("from_state"),
            F.get(states, j).alias("to_state"),
            F.col("journeys").alias("journeys"),
            zero.alias("conversions"),
            zero.alias("value"),
            zero.alias("nulls"),
        ),
    )
    terminal = F.struct(
        F.element_at(states, -1).alias("from_state"),
        F.lit(None).cast(STATE_TYPE).alias("to_state"),
        zero.alias("journeys"),
        F.col("conversions").alias("conversions"),
        F.col("value").alias("value"),
        F.col("nulls").alias("nulls"),
    )
    steps = states_df.select(*by, F.explode(F.concat(inner, F.array(terminal))).alias("step"))
    return (
        steps.select(*by, "step.*")
        .groupBy(*by, "from_state", "to_state")
        .agg(
            *(
                F.sum(c).cast(COUNT_TYPE).alias(c)
                for c in ("journeys", "conversions", "value", "nulls")
            )
        )
    )


def count_transitions_spark(paths_df: DataFrame, order: int) -> TransitionCounts:
    """TransitionCounts computed in Spark; equal, bit for bit, to markov.count_transitions."""
    inner: dict[tuple[State, State], Decimal] = {}
    terminal: dict[State, tuple[Decimal, Decimal, Decimal]] = {}
    # Bounded by states^2 (and in practice by observed transitions), not by journeys.
    for row in transition_sums_df(paths_df, order).collect():
        source = tuple(row["from_state"]) if row["from_state"] else START
        if row["to_state"] is None:
            terminal[source] = (row["conversions"], row["value"], row["nulls"])
        else:
            inner[(source, tuple(row["to_state"]))] = row["journeys"]
    return counts_from_sums(order, inner, terminal)


def count_transitions_spark_by(
    paths_df: DataFrame, order: int, by: Sequence[str]
) -> dict[tuple, TransitionCounts]:
    """One TransitionCounts per distinct value of the ``by`` columns, from a single Spark job.

    Keys are tuples of the ``by`` values; a group whose paths are all skipped (no channel, no
    journeys) has no entry. Each table is bit-identical to count_transitions_spark on the
    group's rows alone. Bounded by groups x transitions, not by journeys.
    """
    by = list(by)
    if not by:
        raise ValueError("count_transitions_spark_by needs at least one column in 'by'")
    inner: dict[tuple, dict[tuple[State, State], Decimal]] = {}
    terminal: dict[tuple, dict[State, tuple[Decimal, Decimal, Decimal]]] = {}
    for row in transition_sums_df(paths_df, order, by).collect():
        key = tuple(row[c] for c in by)
        source = tuple(row["from_state"]) if row["from_state"] else START
        if row["to_state"] is None:
            terminal.setdefault(key, {})[source] = (row["conversions"], row["value"], row["nulls"])
        else:
            inner.setdefault(key, {})[(source, tuple(row["to_state"]))] = row["journeys"]
    keys = sorted(set(inner) | set(terminal), key=repr)
    return {k: counts_from_sums(order, inner.get(k, {}), terminal.get(k, {})) for k in keys}
