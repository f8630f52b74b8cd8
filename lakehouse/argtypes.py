"""argparse value types shared by every `lakehouse` sub-command: a bad value is one line that
says what was expected."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from datetime import date
from pathlib import Path

from lakehouse.asof import future_date_problem


def iso_date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a date of the form YYYY-MM-DD") from None


def as_of_date(text: str) -> date:
    """``--as-of``: a date of the form YYYY-MM-DD, not after today (future_date_problem)."""
    day = iso_date(text)
    problem = future_date_problem(day)
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return day


# Spark and Delta take these numbers as Java ints (a limit, a sample size, a seed): a larger
# one failed inside the JVM with a stack trace instead of a usage line.
JAVA_INT_MAX = 2**31 - 1


def whole_number(minimum: int, what: str = "a whole number") -> Callable[[str], int]:
    """An int from ``minimum`` to JAVA_INT_MAX; ``what`` names it in the message."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"'{text}' is not {what}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} must be at least {minimum}")
        if value > JAVA_INT_MAX:
            raise argparse.ArgumentTypeError(f"{value} must be at most {JAVA_INT_MAX}")
        return value

    return parse


positive_int = whole_number(1)
count = whole_number(0)
version = whole_number(0, "a version number")


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{value} must be greater than 0")
    return value


def column_list(text: str) -> tuple[str, ...]:
    cols = tuple(c.strip() for c in text.split(",") if c.strip())
    if not cols:
        raise argparse.ArgumentTypeError("needs at least one column name")
    return cols


def output_file(text: str) -> str:
    """A file to write: not a folder, and under a writable folder (missing folders between are
    created when it is written). Checked when the command line is read, so a long run does not
    end in a traceback at its last step."""
    path = Path(non_blank(text))
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"'{text}' is a folder, not a file name: add a file name")
    ancestor = path.parent.resolve()
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise argparse.ArgumentTypeError(f"'{text}': {ancestor} is a file, not a folder")
    if not os.access(ancestor, os.W_OK):
        raise argparse.ArgumentTypeError(f"'{text}': folder {ancestor} is not writable")
    return text


def non_blank(text: str) -> str:
    """A value that must say something (an id, an address): blank is refused."""
    if not text.strip():
        raise argparse.ArgumentTypeError("is empty: give a value")
    return text
