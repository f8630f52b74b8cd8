"""The `as_of` date of a run: parsing it, and the snapshot dates a gold table holds."""

from __future__ import annotations

from datetime import UTC, date, datetime

from pyspark.sql import DataFrame

from lakehouse.errors import InputDataError


def as_date(value: date | str | None) -> date | None:
    """A date from a date or a YYYY-MM-DD string (None stays None: "the latest")."""
    if value is None or (isinstance(value, date) and not isinstance(value, datetime)):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value)
        except ValueError:
            raise InputDataError(f"as_of must be a date YYYY-MM-DD, got {value!r}") from None
    raise TypeError(f"as_of must be a date, a YYYY-MM-DD string or None, got {value!r}")


def future_date_problem(day: date, today: date | None = None) -> str | None:
    """Why ``day`` cannot be a date that figures are valid for, or None.

    A day after today's UTC date has not happened: gold for it fills every KPI day up to it
    with zeros, publish labels today's figures with it, and retention would erase people whose
    data-expiry date has not come yet, which cannot be undone. Such a date is nearly always a
    mistyped year. The clock is read only to refuse; no figure depends on it.
    """
    today = today or datetime.now(UTC).date()
    if day <= today:
        return None
    return (f"{day} is after today ({today}, UTC): no figure can be valid for a day that has "
            f"not happened (a mistyped year?); give a date up to {today}")


def snapshot_dates(df: DataFrame) -> list[date]:
    """The distinct non-null ``as_of`` values of a table, oldest first (a handful of rows)."""
    return sorted(
        r["as_of"] for r in df.select("as_of").distinct().collect() if r["as_of"] is not None
    )


def choose_snapshot(df: DataFrame, as_of: date | None, table: str, when_empty: str) -> date:
    """The snapshot a job reads: ``as_of`` (it must be in ``table``) or the latest one.

    ``when_empty`` is the message when the table holds no snapshot at all.
    """
    present = snapshot_dates(df)
    if not present:
        raise InputDataError(when_empty)
    if as_of is None:
        return present[-1]
    if as_of not in present:
        raise InputDataError(
            f"{table} holds as_of {_date_list(present)}, not {as_of}: "
            f"pass one of those, or run the gold stage with --as-of {as_of} first (gold takes "
            f"days from silver's first event or order day up to today)"
        )
    return as_of


def _date_list(days: list[date]) -> str:
    """Dates for a one-line message: all of a few, else the first and the last three."""
    if len(days) <= 5:
        return ", ".join(map(str, days))
    return f"{days[0]}, ... ({len(days) - 4} more), " + ", ".join(map(str, days[-3:]))
