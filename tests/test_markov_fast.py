"""The vectorised counter and the column-wise path-file reader against their plain-Python oracles.

Every expected value comes from count_transitions (the exact plain-Python counter) or from the
line-by-line reader, never from the code under test. No Spark here.
"""

from __future__ import annotations

import math
import random
from decimal import Decimal

import numpy as np
import pandas as pd
import pytest

from lakehouse.errors import InputDataError
from ml.attribution.markov import (
    PATH_COLUMNS,
    _count_plain_paths,
    attribute_paths,
    count_transitions,
    count_transitions_vectorised,
)
from ml.attribution.pathfile import (
    _read_path_file_by_line,
    _read_plain_path_file,
    read_path_file,
)

NAMES = ["Paid Search", "E-mail", "Café Crème", "日本語 広告", "(null)", "A", "B", "a b"]
# Fractions that decimals and doubles disagree on, values that round half-up at the 18th
# digit (5e-19 -> 1e-18) or to nothing (4e-19 -> 0), and missing weights.
WEIGHTS = [0.0, 1.0, 2.0, 3.0, 0.1, 1 / 3, 123.45, 0.25, 1.5e-18, 5e-19, 4e-19, None, math.nan]


def assert_same_counts(got, expected) -> None:
    """Same order, same keys in the same order, same floats bit for bit."""
    assert got.order == expected.order
    for name in ("transitions", "conversions", "conversion_value", "nulls"):
        got_items = list(getattr(got, name).items())
        assert got_items == list(getattr(expected, name).items()), name
        assert all(type(w) is float for _, w in got_items), name


def random_table(seed: int, n: int = 250, weights: list = WEIGHTS) -> list[tuple]:
    """Paths with None channels, repeats, loops and empty paths; rows without journeys."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        path: list[str | None] = []
        for _ in range(rng.randint(0, 8)):
            roll = rng.random()
            if roll < 0.08:
                path.append(None)
            elif roll < 0.3 and path:
                path.append(path[-1])  # a repeat (or a None after a None)
            else:
                path.append(rng.choice(NAMES))
        rows.append((path, rng.choice(weights), rng.choice(weights), rng.choice(weights)))
    return rows


def plain_count(rows, order):
    """The vectorised count itself, failing if it handed the table to count_transitions."""
    counts = _count_plain_paths(rows, order)
    assert counts is not None, "the table was left to count_transitions"
    return counts


@pytest.mark.parametrize("order", [1, 2, 3, 4])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_vectorised_counts_equal_the_oracle_on_random_tables(order, seed):
    rows = random_table(seed)
    expected = count_transitions(rows, order)
    assert expected.transitions  # the table is not trivially empty
    assert_same_counts(plain_count(rows, order), expected)
    frame = pd.DataFrame(rows, columns=list(PATH_COLUMNS))
    assert_same_counts(plain_count(frame, order), expected)
    assert_same_counts(count_transitions_vectorised(frame, order), expected)


@pytest.mark.parametrize("order", [1, 3])
def test_object_weight_columns_and_integer_weights(order):
    rows = [(p, int(c) if c == c and c is not None else c, v, n) for p, c, v, n in random_table(4)]
    frame = pd.DataFrame(rows, columns=list(PATH_COLUMNS)).astype(
        {"total_conversions": object, "total_null": object}
    )
    assert frame["total_conversions"].dtype == object
    assert_same_counts(plain_count(frame, order), count_transitions(frame, order))


def test_row_order_does_not_change_the_counts():
    rows = random_table(7, n=400)
    shuffled = rows[:]
    random.Random(8).shuffle(shuffled)
    for order in (1, 2, 3, 4):
        expected = count_transitions(rows, order)
        assert_same_counts(plain_count(shuffled, order), expected)
        assert_same_counts(plain_count(rows, order), plain_count(shuffled, order))


def test_big_integer_weights_are_summed_exactly():
    # From 2**53 up every double is a whole number, taken exactly rather than through repr;
    # the sums of such counts are exact too (the oracle's decimals, the parts' integers).
    # 2**53 + 2**53 + 2 is a tie at 2**54's spacing: the sum must be rounded once, at the end.
    big = [2.0**53, 2.0**53 + 2, 2.0**54 + 4, 0.1, 1 / 3, 0.0]
    rows = random_table(9, n=5, weights=big) + [(["A", "B"], 2**53 + 1, 1, 0)]
    for order in (1, 2):
        assert_same_counts(plain_count(rows, order), count_transitions(rows, order))


def test_weights_too_large_for_the_parts_are_left_to_the_oracle():
    rows = random_table(10, n=50, weights=[1e17, 3e17, 0.5])
    assert _count_plain_paths(rows, 2) is None
    assert_same_counts(count_transitions_vectorised(rows, 2), count_transitions(rows, 2))


def test_odd_tables_are_left_to_the_oracle_and_count_the_same():
    tables = [
        [(["A", "B"], Decimal("0.1"), 1, 0), (["B"], "2.5", 0, 1)],  # not floats
        [(("A", "B"), 1, 0, 0), (np.array(["B", "A"], dtype=object), 0, 0, 1)],
        [(["A"], -1e-20, 1, 1)],  # a negative that rounds to -0 is no error
    ]
    for rows in tables:
        for order in (1, 2):
            assert_same_counts(
                count_transitions_vectorised(rows, order), count_transitions(rows, order)
            )


def test_empty_and_journeyless_tables():
    for rows in (
        [],
        [([], 1, 1, 1), ([None], 2, 0, 0), (["A"], 0, 5, 0), (["B"], None, 1, np.nan)],
    ):
        counts = plain_count(rows, 2)
        assert_same_counts(counts, count_transitions(rows, 2))
        assert counts.transitions == {} and counts.conversions == {}
    frame = pd.DataFrame({c: [] for c in PATH_COLUMNS})
    assert_same_counts(count_transitions_vectorised(frame, 1), count_transitions(frame, 1))


@pytest.mark.parametrize(
    ("rows", "error"),
    [
        ([(["A"], 1, 0, 0), (["B"], 0, 2, -1)], ValueError),  # negative: row_weights' message
        ([(["A"], 1, 0, 0), ("A > B", 1, 0, 0)], TypeError),  # a path as a string
        ([(["A"], math.inf, 0, 0)], ValueError),
        ([(["A"], 1, 0, 0), (["B"], "many", 0, 0)], ValueError),
        ([(None, 1, 0, 0)], TypeError),
        ([(["A", math.nan, "A"], 1, 0, 1)], TypeError),  # NaN is a name (unsortable), not a null
        ([(["A"], 1, 0)], ValueError),
    ],
)
def test_errors_are_the_oracles(rows, error):
    with pytest.raises(error) as expected:
        count_transitions(rows, 1)
    with pytest.raises(error) as got:
        count_transitions_vectorised(rows, 1)
    assert str(got.value) == str(expected.value)


def test_missing_columns_and_bad_order_are_the_oracles_errors():
    frame = pd.DataFrame({"channels": [["A"]], "total_conversions": [1.0]})
    with pytest.raises(ValueError, match="missing column"):
        count_transitions_vectorised(frame, 1)
    with pytest.raises(ValueError, match="order"):
        count_transitions_vectorised([(["A"], 1, 0, 0)], 5)


def test_attribute_paths_still_reports_a_string_path_before_a_bad_weight():
    # attribute_paths has always checked every path before any weight.
    rows = [(["A"], -1, 0, 0), ("A > B", 1, 0, 0)]
    for paths in (rows, pd.DataFrame(rows, columns=list(PATH_COLUMNS))):
        with pytest.raises(TypeError, match="got the string 'A > B'"):
            attribute_paths(paths)


def test_attribute_paths_matches_the_oracle_counts_end_to_end():
    from ml.attribution.markov import attribute

    rows = random_table(11, n=300)
    frame = pd.DataFrame(rows, columns=list(PATH_COLUMNS))
    for order in (1, 2):
        expected = attribute(count_transitions(rows, order)).channels
        pd.testing.assert_frame_equal(
            attribute_paths(frame, order).channels, expected, check_exact=True
        )


# ----------------------------------------------------------------------------- path files

HEADER = "path;total_conversions;total_conversion_value;total_null"

PLAIN_FILES = {
    "usual": f"{HEADER}\nPaid Search > E-mail > Paid Search;1.5;30.25;0.5\nA;0;0;2\n",
    "bom_crlf_blank_lines": f"\ufeff{HEADER}\r\n\r\nA > B;1;2;3\r\n   \r\n\t\r\nB;0;0;1\r\n\r\n",
    "lone_cr": f"{HEADER}\rA > B;1;2;3\rB;0;0;1",
    "unicode_and_inner_spaces": (
        f"{HEADER}\nCafé Crème  >日本語 広告>  a  b ;0.1;0.30000000000000004;1e-3\n"
    ),
    "spacing_and_numbers": f"{HEADER}\n  A>B >C  ; 1 ;\t2.50\t;1_000\nB > B;-0;1e2;0.0\n",
    "columns_reordered_and_extra": (
        "Total_Null ; note ; PATH;total_conversion_value;total_conversions\n"
        "1;x > y;A > B;2;3\n0;;B;0;1\n"
    ),
    "no_final_newline": f"{HEADER}\nA;1;1;1",
}

QUOTED_FILES = {
    "quoted_fields": f'{HEADER}\n"A > B";"1";2;3\n"C;D > E";0;0;1\n',
    "quoted_newline": f'{HEADER}\n"A >\nB";1;2;3\n',
}


def write(tmp_path, text: str, name: str = "paths.csv") -> str:
    target = tmp_path / name
    target.write_bytes(text.encode("utf-8"))
    return str(target)


def assert_same_tables(got: pd.DataFrame, expected: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(got, expected, check_exact=True)
    assert got["channels"].tolist() == expected["channels"].tolist()
    for column in PATH_COLUMNS[1:]:  # -0.0 stays -0.0
        assert np.signbit(got[column]).tolist() == np.signbit(expected[column]).tolist()


@pytest.mark.parametrize("name", sorted(PLAIN_FILES))
def test_plain_files_read_column_wise_as_the_line_reader_reads_them(tmp_path, name):
    path = write(tmp_path, PLAIN_FILES[name])
    fast = _read_plain_path_file(path)
    assert fast is not None, "the file went to the line reader"
    assert_same_tables(fast, _read_path_file_by_line(path))
    assert_same_tables(read_path_file(path), _read_path_file_by_line(path))


@pytest.mark.parametrize("name", sorted(QUOTED_FILES))
def test_quoted_files_read_as_before(tmp_path, name):
    path = write(tmp_path, QUOTED_FILES[name])
    assert_same_tables(read_path_file(path), _read_path_file_by_line(path))


def outcome(reader, path):
    try:
        return reader(path)
    except InputDataError as exc:
        return str(exc)


def test_mangled_files_give_the_line_readers_table_or_message(tmp_path):
    # Random edits of valid files: whatever the file, read_path_file answers as the line
    # reader does, the same table or the same message (file and line).
    pieces = [";", '"', ">", " > ", " ", "\t", "\x0c", "\r", "\n", "-", ",", "nan", "inf", "é",
              "\ufeff", "1_0", "\x00", "", "e5", ";;;", "A"]  # fmt: skip
    rng = random.Random(12)
    bases = list(PLAIN_FILES.values())
    for case in range(300):
        text = rng.choice(bases)
        for _ in range(rng.randint(1, 3)):
            at = rng.randrange(len(text) + 1)
            cut = rng.choice([0, 0, 1, 2])
            text = text[:at] + rng.choice(pieces) + text[at + cut :]
        path = write(tmp_path, text, f"case{case}.csv")
        got, expected = outcome(read_path_file, path), outcome(_read_path_file_by_line, path)
        if isinstance(expected, str):
            assert got == expected, repr(text)
        else:
            assert_same_tables(got, expected)


def random_valid_file(rng: random.Random) -> str:
    """A path file the line reader accepts, with the spacing, numbers and line ends it allows."""
    spaces = ["", " ", "  ", "\t", "\xa0", "\u2003", "\x0b", "\x0c", "\x1c"]
    names = ["A", "Paid Search", "Café", "日本語", "a\tb", "x\u2003y", "(null)", "1"]
    numbers = ["0", "1", "2.5", " 3 ", "1e2", "1_0", "-0", "+4", "0.1", "\u0663", "7\t", ".5"]
    ends = ["\n", "\r\n", "\r"]
    columns = ["path", "total_conversions", "total_conversion_value", "total_null"]
    rng.shuffle(columns)
    header = [c.upper() if rng.random() < 0.2 else c for c in columns]
    lines = [";".join(f"{rng.choice(spaces[:3])}{h}{rng.choice(spaces[:3])}" for h in header)]
    for _ in range(rng.randint(1, 6)):
        if len(lines) > 1 and rng.random() < 0.2:  # a line the reader skips
            lines.append(rng.choice(["", " ", "\t", " \t ", "\x0c", ";;;", " ; ;\t; "]))
            continue
        path = (
            rng.choice(spaces)
            + f"{rng.choice(spaces)}>{rng.choice(spaces)}".join(
                rng.choice(names) for _ in range(rng.randint(1, 5))
            )
            + rng.choice(spaces)
        )
        fields = {"path": path} | {c: rng.choice(numbers) for c in columns if c != "path"}
        lines.append(";".join(fields[c] for c in columns))
    bom = "\ufeff" if rng.random() < 0.2 else ""
    return bom + "".join(line + rng.choice(ends) for line in lines)


def test_random_valid_files_read_as_the_line_reader_reads_them(tmp_path):
    rng = random.Random(13)
    fast = 0
    for case in range(300):
        path = write(tmp_path, random_valid_file(rng), f"case{case}.csv")
        expected = _read_path_file_by_line(path)
        assert_same_tables(read_path_file(path), expected)
        fast += _read_plain_path_file(path) is not None
    assert fast > 100  # most of them took the column-wise route
