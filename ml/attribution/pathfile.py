"""Path-file front end: ``path;total_conversions;total_conversion_value;total_null`` -> attribution.

The layout is the common one of Markov attribution tools: a header line, ``;`` between
columns, the channels of a path joined by ``>`` (conventionally `` > ``; the spaces around each
channel name are dropped, spaces and any unicode inside a name are kept). Counts may be
fractional and are kept as they are. Every problem is reported as one InputDataError line that
names the file and its line number.
"""

from __future__ import annotations

import csv
import io
import itertools
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from lakehouse.errors import InputDataError
from ml.attribution.markov import ORDERS, PATH_COLUMNS, attribute_paths

PATH_FILE_COLUMNS = ("path", "total_conversions", "total_conversion_value", "total_null")
RESULT_COLUMNS = ("channel", "removal_effect", "total_conversions", "total_conversion_value")
CHANNEL_SEPARATOR = ">"
_OTHER_SEPARATORS = {",": "','", "\t": "tab", "|": "'|'"}
_EXPECTED_HEADER = ";".join(PATH_FILE_COLUMNS)


def _guess_separator(line: str) -> str | None:
    """The separator a line seems to use instead of ';', for the error message."""
    counts = {sep: line.count(sep) for sep in _OTHER_SEPARATORS}
    best = max(counts, key=lambda sep: counts[sep])
    return _OTHER_SEPARATORS[best] if counts[best] else None


def _number(text: str, column: str, where: str) -> float:
    cleaned = text.strip()
    try:
        value = float(cleaned)
    except ValueError:
        hint = " (use '.' as the decimal point)" if "," in cleaned else ""
        shown = repr(text) if cleaned else "empty"
        raise InputDataError(f"{where}: {column} is not a number: {shown}{hint}") from None
    if not math.isfinite(value):
        raise InputDataError(f"{where}: {column} is not a finite number: {text!r}")
    if value < 0:
        raise InputDataError(f"{where}: {column} is negative: {text.strip()}")
    return value


def _channels(text: str, where: str) -> list[str]:
    if not text.strip():
        raise InputDataError(f"{where}: empty path")
    channels = [name.strip() for name in text.split(CHANNEL_SEPARATOR)]
    if any(not name for name in channels):
        raise InputDataError(f"{where}: empty channel name in path {text!r}")
    return channels


def read_path_file(path: str | Path) -> pd.DataFrame:
    """A validated path table (PATH_COLUMNS, channels as lists) from a path file.

    Raises InputDataError naming the file and line for: a missing or unreadable file, a
    separator other than ';', a missing column, a row with the wrong number of fields, an
    empty path or channel name, a value that is not a number, a negative value.

    A plain valid file is parsed column-wise (about 5x faster); anything else, errors
    included, goes through the line-by-line reader, which gives the same table for any valid
    file and the message for any invalid one.
    """
    table = _read_plain_path_file(path)
    return table if table is not None else _read_path_file_by_line(path)


def _read_plain_path_file(path: str | Path) -> pd.DataFrame | None:
    """read_path_file's table for a valid file without quotes, or None for any other file.

    pandas splits the fields in C; the checks are the line reader's, made on whole columns.
    """
    try:
        with open(path, encoding="utf-8-sig", newline="") as handle:
            text = handle.read()
    except (OSError, UnicodeDecodeError):
        return None
    # csv.reader's rules for quotes and NUL differ from pandas' in corner cases; such files
    # are rare enough to leave to the line reader.
    if '"' in text or "\0" in text:
        return None
    try:
        fields = pd.read_csv(
            io.StringIO(text),
            sep=";",
            header=None,
            dtype=str,
            keep_default_na=False,
            quoting=csv.QUOTE_NONE,
            skip_blank_lines=True,
        )
    except (pd.errors.ParserError, pd.errors.EmptyDataError):
        return None
    n_rows, n_columns = fields.shape
    columns = [h.strip().lower() for h in fields.iloc[0]]
    if n_rows < 2 or n_columns < 2 or any(c not in columns for c in PATH_FILE_COLUMNS):
        return None
    # pandas pads a short row with '' and rejects a long one, so every row has all its fields
    # exactly when the separators add up. The lines pandas skips (spaces and tabs only) have
    # none, and the line reader skips them too.
    if text.count(";") != n_rows * (n_columns - 1):
        return None
    body = fields.iloc[1:]
    channels = _plain_channels(body.iloc[:, columns.index("path")].tolist())
    if channels is None:
        return None
    table = {PATH_COLUMNS[0]: channels}
    for column, target in zip(PATH_FILE_COLUMNS[1:], PATH_COLUMNS[1:], strict=True):
        try:
            # Where float(text) succeeds it equals the line reader's float(text.strip()) (float
            # ignores the same spaces around a number); where it fails, the line reader decides.
            values = np.array(list(map(float, body.iloc[:, columns.index(column)].tolist())))
        except ValueError:
            return None
        if not (np.isfinite(values) & (values >= 0)).all():
            return None
        table[target] = values
    return pd.DataFrame(table)


def _plain_channels(paths: list[str]) -> list[list[str]] | None:
    """Each path's stripped channel names, or None if a path or a name is empty."""
    # The usual layout, one space each side of '>' and none inside the ends of a name, splits
    # on ' > ' to the final names: then no name holds a '>' or has spaces to strip.
    channels = [path.split(" > ") for path in paths]
    names = set(itertools.chain.from_iterable(channels))
    if not all(name and name == name.strip() and CHANNEL_SEPARATOR not in name for name in names):
        channels = [[name.strip() for name in path.split(CHANNEL_SEPARATOR)] for path in paths]
        if "" in itertools.chain.from_iterable(channels):
            return None
    return channels


def _read_path_file_by_line(path: str | Path) -> pd.DataFrame:
    """read_path_file with every check made line by line, so an error names its line."""
    name = str(path)
    try:
        with open(path, encoding="utf-8-sig", newline="") as handle:
            lines = list(csv.reader(handle, delimiter=";"))
    except FileNotFoundError:
        raise InputDataError(f"{name}: path file not found") from None
    except IsADirectoryError:
        raise InputDataError(f"{name}: is a directory, expected a path file") from None
    except UnicodeDecodeError as exc:
        raise InputDataError(f"{name}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except csv.Error as exc:
        raise InputDataError(f"{name}: unreadable as ';'-separated text ({exc})") from None

    # (line number, fields); blank lines are skipped (a trailing newline, an empty last line).
    numbered = [(n, row) for n, row in enumerate(lines, start=1) if any(f.strip() for f in row)]
    if not numbered:
        raise InputDataError(f"{name}: empty file, expected the header line {_EXPECTED_HEADER}")
    header_line, header = numbered[0]
    columns = [h.strip().lower() for h in header]
    if len(columns) == 1:
        guess = _guess_separator(header[0])
        seen = f"; the header looks {guess}-separated" if guess else ""
        raise InputDataError(
            f"{name} line {header_line}: unknown separator, expected ';'{seen} "
            f"(header must be {_EXPECTED_HEADER})"
        )
    missing = [c for c in PATH_FILE_COLUMNS if c not in columns]
    if missing:
        raise InputDataError(
            f"{name} line {header_line}: missing column(s) {', '.join(missing)} "
            f"(header has {', '.join(columns)}; expected {_EXPECTED_HEADER})"
        )
    position = {c: columns.index(c) for c in PATH_FILE_COLUMNS}

    records = []
    for line, row in numbered[1:]:
        where = f"{name} line {line}"
        if len(row) != len(columns):
            guess = _guess_separator(";".join(row)) if len(row) == 1 else None
            seen = f" (the line looks {guess}-separated)" if guess else ""
            raise InputDataError(
                f"{where}: expected {len(columns)} fields separated by ';', found {len(row)}{seen}"
            )
        records.append(
            (
                _channels(row[position["path"]], where),
                *(_number(row[position[c]], c, where) for c in PATH_FILE_COLUMNS[1:]),
            )
        )
    if not records:
        raise InputDataError(f"{name}: no paths after the header line")
    return pd.DataFrame.from_records(records, columns=list(PATH_COLUMNS))


def run_path_file(paths: str, order: int | None = 1, output: str | None = None) -> pd.DataFrame:
    """Markov attribution of a path file: one row per channel, channels in sorted order.

    Columns: channel, removal_effect, total_conversions, total_conversion_value (attributed).
    ``order=None`` chooses the order by hold-out log-loss and prints the choice and the scores
    on stderr (stdout may carry the CSV). ``output``, when given, receives the table as
    ','-separated UTF-8 CSV. ``result.attrs`` holds ``order`` and, for automatic choice,
    ``order_reason``.
    """
    if order is not None and (isinstance(order, bool) or order not in ORDERS):
        raise InputDataError(
            f"order {order!r} is not supported: use one of {', '.join(map(str, ORDERS))}, "
            f"or None to choose automatically"
        )
    path_df = read_path_file(paths)
    result = attribute_paths(path_df, order)
    table = result.channels.loc[:, list(RESULT_COLUMNS)].reset_index(drop=True)
    table.attrs["order"] = result.order
    if result.order_choice is not None:
        table.attrs["order_reason"] = result.order_choice.reason
        print(f"{paths}: {result.order_choice.reason}", file=sys.stderr)
    if output is not None:
        target = Path(output)
        target.parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(target, index=False, sep=",", encoding="utf-8", lineterminator="\n")
    return table
