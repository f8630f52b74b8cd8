"""Exact Markov attribution, checked against chains solved by hand (no Spark here).

Notation in the hand algebra: x_S is the probability of reaching (conversion) from state S,
P = x_start; v_S the expected conversion value from S, V = v_start; RE_c = 1 - P_c / P.
"""

from __future__ import annotations

import math
import random
from fractions import Fraction as Fr

import numpy as np
import pandas as pd
import pytest

from lakehouse.errors import InputDataError
from ml.attribution.markov import (
    START,
    absorption,
    attribute,
    attribute_paths,
    build_chain,
    choose_order,
    collapse_repeats,
    count_transitions,
    order_states,
    share_out,
)
from ml.attribution.pathfile import read_path_file, run_path_file


def by_channel(result) -> dict[str, dict[str, float]]:
    return result.channels.set_index("channel").to_dict(orient="index")


def assert_channels(result, expected: dict[str, dict[str, Fr | float]]) -> None:
    """Every listed figure of every channel, to float precision."""
    got = by_channel(result)
    assert sorted(got) == sorted(expected)
    for channel, figures in expected.items():
        for name, value in figures.items():
            assert got[channel][name] == pytest.approx(float(value), rel=1e-12, abs=1e-15), (
                channel,
                name,
            )


def random_paths(seed: int, n: int = 300, channels: int = 6, max_len: int = 7) -> list[tuple]:
    rng = random.Random(seed)
    names = [f"ch{i}" for i in range(channels)]
    rows = []
    for _ in range(n):
        path = [rng.choice(names) for _ in range(rng.randint(1, max_len))]
        converted = rng.random() < 0.3
        conv = rng.choice([1.0, 2.0, 0.5]) if converted else 0.0
        value = conv * rng.uniform(5, 200)
        rows.append((path, conv, value, rng.choice([0.0, 1.0, 3.0, 0.25])))
    return rows


# ----------------------------------------------------------------------------- states


def test_collapse_repeats_merges_consecutive_only_and_drops_nulls():
    assert collapse_repeats(["A", "A", "B", "A", "A"]) == ("A", "B", "A")
    assert collapse_repeats(["A", None, "A", "B"]) == ("A", "B")
    assert collapse_repeats([]) == ()
    assert collapse_repeats([None]) == ()


def test_order_2_states_are_sliding_windows_of_the_collapsed_path():
    # A > A > B > C > B collapses to A > B > C > B: windows (A,B) (B,C) (C,B)
    assert order_states(["A", "A", "B", "C", "B"], 2) == [("A", "B"), ("B", "C"), ("C", "B")]
    assert order_states(["A", "B", "C", "D"], 3) == [("A", "B", "C"), ("B", "C", "D")]
    # Shorter than k after collapsing: the whole path is one state.
    assert order_states(["A"], 2) == [("A",)]
    assert order_states(["A", "A"], 2) == [("A",)]
    assert order_states(["A", "B"], 4) == [("A", "B")]
    assert order_states([], 2) == []
    with pytest.raises(ValueError, match="order"):
        order_states(["A"], 5)


def test_order_2_counts():
    counts = count_transitions([(["A", "B", "C"], 1, 7.5, 0), (["B", "B", "C"], 0, 0, 2)], 2)
    ab, bc = ("A", "B"), ("B", "C")
    assert counts.transitions == {(START, ab): 1.0, (START, bc): 2.0, (ab, bc): 1.0}
    assert counts.conversions == {bc: 1.0}
    assert counts.conversion_value == {bc: 7.5}
    assert counts.nulls == {bc: 2.0}


def test_fractional_counts_are_kept_not_truncated():
    counts = count_transitions([(["A"], 0.25, 3.5, 0.5), (["A", "B"], 1.5, 0.75, 0.125)], 1)
    assert counts.transitions[(START, ("A",))] == 0.75 + 1.625
    assert counts.transitions[(("A",), ("B",))] == 1.625
    assert counts.conversions == {("A",): 0.25, ("B",): 1.5}
    assert counts.nulls == {("A",): 0.5, ("B",): 0.125}
    result = attribute(counts)
    assert result.total_conversions == 1.75
    assert math.fsum(result.channels["total_conversions"]) == 1.75


def test_rows_without_channels_or_journeys_are_skipped_and_bad_weights_rejected():
    counts = count_transitions(
        [
            (["A"], 1, 2, 0),
            ([], 5, 5, 5),
            ([None], 1, 1, 1),
            (["B"], 0, 0, 0),
            (["A"], None, None, np.nan),
        ],
        1,
    )
    assert counts.transitions == {(START, ("A",)): 1.0}
    with pytest.raises(ValueError, match="negative"):
        count_transitions([(["A"], -1, 0, 0)], 1)
    with pytest.raises(TypeError, match="sequence"):
        count_transitions([("A > B", 1, 0, 0)], 1)
    with pytest.raises(ValueError, match="finite"):
        count_transitions([(["A"], math.inf, 0, 0)], 1)


def test_dataframe_and_tuple_inputs_count_the_same():
    rows = random_paths(3)
    frame = pd.DataFrame(
        rows, columns=["channels", "total_conversions", "total_conversion_value", "total_null"]
    )
    assert count_transitions(frame, 2) == count_transitions(rows, 2)


# ----------------------------------------------------------------------------- hand-solved chains


def test_two_channels_with_values_solved_by_hand():
    # Journeys: "A" converts (value 10), "B" converts (value 30), 2 x "A > B" do not.
    #   start->A 3, start->B 1 (of 4);  A: ->conv 1 (value 10), ->B 2 (out 3)
    #   B: ->conv 1 (value 30), ->null 2 (out 3)
    # x_B = 1/3;  x_A = 1/3 + 2/3 x_B = 5/9;  P = 3/4 * 5/9 + 1/4 * 1/3 = 1/2  (= 2 of 4)
    # r_v: A 10/3, B 30/3 = 10;  v_B = 10;  v_A = 10/3 + 2/3 * 10 = 10;  V = 10  (= 40 / 4)
    # remove A: P_A = 1/4 * 1/3 = 1/12 -> RE_A = 1 - (1/12)/(1/2) = 5/6;  V_A = 1/4 * 10 -> 3/4
    # remove B: P_B = 3/4 * 1/3 = 1/4 -> RE_B = 1/2;  V_B = 3/4 * 10/3 = 5/2 -> RE^v_B = 3/4
    # conversions: A = (5/6)/(4/3) * 2 = 5/4, B = (1/2)/(4/3) * 2 = 3/4;  value 40 split 1:1
    result = attribute_paths([(["A"], 1, 10, 0), (["B"], 1, 30, 0), (["A", "B"], 0, 0, 2)])
    assert result.conversion_probability == pytest.approx(0.5, rel=1e-14)
    assert result.value_per_journey == pytest.approx(10.0, rel=1e-14)
    assert_channels(
        result,
        {
            "A": {
                "removal_effect": Fr(5, 6),
                "value_removal_effect": Fr(3, 4),
                "total_conversions": Fr(5, 4),
                "total_conversion_value": 20,
            },
            "B": {
                "removal_effect": Fr(1, 2),
                "value_removal_effect": Fr(3, 4),
                "total_conversions": Fr(3, 4),
                "total_conversion_value": 20,
            },
        },
    )


def test_loop_a_b_a_solved_by_hand():
    # Journeys: "A > B > A" converts (value 6), "A" does not. A revisit, not a repeat: kept.
    #   start->A 2;  A: ->B 1, ->conv 1, ->null 1 (out 3);  B: ->A 1
    # x_A = 1/3 + 1/3 x_B, x_B = x_A  =>  x_A = 1/2 = P  (1 of 2 journeys)
    # remove B: x_A = 1/3 -> RE_B = 1 - (1/3)/(1/2) = 1/3;  remove A: P = 0 -> RE_A = 1
    # conversions: A = 1/(4/3) = 3/4, B = 1/4; value (r_v[A] = 6/3) has the same effects
    result = attribute_paths([(["A", "B", "A"], 1, 6, 0), (["A"], 0, 0, 1)])
    assert result.conversion_probability == pytest.approx(0.5, rel=1e-14)
    assert result.value_per_journey == pytest.approx(3.0, rel=1e-14)
    assert_channels(
        result,
        {
            "A": {
                "removal_effect": 1,
                "total_conversions": Fr(3, 4),
                "total_conversion_value": 4.5,
            },
            "B": {
                "removal_effect": Fr(1, 3),
                "total_conversions": Fr(1, 4),
                "total_conversion_value": 1.5,
            },
        },
    )


def test_repeats_collapse_but_do_not_change_the_answer_of_a_loop_free_path():
    plain = attribute_paths([(["A", "B"], 1, 5, 1), (["B"], 0, 0, 1)])
    repeated = attribute_paths([(["A", "A", "B", "B"], 1, 5, 1), (["B", "B"], 0, 0, 1)])
    pd.testing.assert_frame_equal(plain.channels, repeated.channels)


def test_channel_only_in_dead_end_non_converting_journeys_gets_zero():
    # "A > B" converts; "C" and 2 x "A > C" do not.
    #   start->A 3, start->C 1;  A: ->B 1, ->C 2;  B: ->conv 1;  C: ->null 3
    # x_C = 0, x_B = 1, x_A = 1/3, P = 3/4 * 1/3 = 1/4
    # remove C: C already led only to (null): P_C = 1/4 -> RE_C = 0
    # remove A or B: no way to (conversion) is left -> RE = 1 each; split 1/2 : 1/2 : 0
    result = attribute_paths([(["A", "B"], 1, 8, 0), (["C"], 0, 0, 1), (["A", "C"], 0, 0, 2)])
    assert result.conversion_probability == pytest.approx(0.25, rel=1e-14)
    assert_channels(
        result,
        {
            "A": {"removal_effect": 1, "total_conversions": 0.5, "total_conversion_value": 4},
            "B": {"removal_effect": 1, "total_conversions": 0.5, "total_conversion_value": 4},
            "C": {"removal_effect": 0, "total_conversions": 0, "total_conversion_value": 0},
        },
    )


def test_non_converting_channel_feeding_a_converting_state_gets_credit():
    # The Markov semantics, not a bug: "A > B" converts, "C > B" does not. The chain forgets
    # how B was reached, so C leads to B's conversion rate 1/2 like A does.
    #   start->A 1/2, start->C 1/2;  A->B 1, C->B 1;  B: ->conv 1/2, ->null 1/2;  P = 1/2
    # remove C: P_C = 1/2 * 1/2 = 1/4 -> RE_C = 1/2;  remove A likewise 1/2;  remove B: 1
    result = attribute_paths([(["A", "B"], 1, 2, 0), (["C", "B"], 0, 0, 1)])
    assert_channels(
        result,
        {
            "A": {"removal_effect": Fr(1, 2), "total_conversions": Fr(1, 4)},
            "B": {"removal_effect": 1, "total_conversions": Fr(1, 2)},
            "C": {"removal_effect": Fr(1, 2), "total_conversions": Fr(1, 4)},
        },
    )


def test_order_2_chain_solved_by_hand():
    # "A > B > C" converts, "B > C" and "A > B" do not. Order-2 states (A,B), (B,C):
    #   start->(A,B) 2, start->(B,C) 1;  (A,B): ->(B,C) 1, ->null 1;  (B,C): ->conv 1, ->null 1
    # x_BC = 1/2;  x_AB = 1/2 * 1/2 = 1/4;  P = 2/3 * 1/4 + 1/3 * 1/2 = 1/3  (1 of 3)
    # remove A ((A,B) -> null): P_A = 1/3 * 1/2 = 1/6 -> RE_A = 1/2
    # remove B (every state) or C ((B,C)): P = 0 -> RE = 1;  split 1 conversion 1/2 : 1 : 1
    rows = [(["A", "B", "C"], 1, 9, 0), (["B", "C"], 0, 0, 1), (["A", "B"], 0, 0, 1)]
    result = attribute_paths(rows, order=2)
    assert result.order == 2 and result.n_states == 3
    assert result.conversion_probability == pytest.approx(1 / 3, rel=1e-14)
    assert_channels(
        result,
        {
            "A": {"removal_effect": Fr(1, 2), "total_conversions": Fr(1, 5)},
            "B": {"removal_effect": 1, "total_conversions": Fr(2, 5)},
            "C": {"removal_effect": 1, "total_conversions": Fr(2, 5)},
        },
    )


def test_no_conversions_gives_zeros_not_nan():
    result = attribute_paths([(["A", "B"], 0, 0, 3), (["B"], 0, 0, 1)], order=2)
    assert result.conversion_probability == 0.0
    table = result.channels
    assert list(table["channel"]) == ["A", "B"]
    numbers = table.drop(columns="channel").to_numpy()
    assert not np.isnan(numbers).any()
    assert (numbers == 0).all()


def test_conversions_without_values_give_zero_value_shares():
    result = attribute_paths([(["A"], 2, 0, 1), (["B", "A"], 1, 0, 0)])
    assert (result.channels["total_conversion_value"] == 0).all()
    assert math.fsum(result.channels["total_conversions"]) == 3.0


# ----------------------------------------------------------------------------- invariants


@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_flow_conservation_and_exact_totals_on_random_paths(order):
    # A counted chain reproduces the observed rates exactly: P = conversions / journeys and
    # V = value / journeys, whatever the loops.
    rows = random_paths(seed=order)
    conv = math.fsum(r[1] for r in rows)
    value = math.fsum(r[2] for r in rows)
    journeys = math.fsum(r[1] + r[3] for r in rows)
    result = attribute_paths(rows, order=order)
    assert result.conversion_probability == pytest.approx(conv / journeys, rel=1e-12)
    assert result.value_per_journey == pytest.approx(value / journeys, rel=1e-12)
    assert math.fsum(result.channels["total_conversions"]) == result.total_conversions
    assert math.fsum(result.channels["total_conversion_value"]) == result.total_conversion_value
    assert result.total_conversions == pytest.approx(conv, rel=1e-15)
    effects = result.channels[["removal_effect", "value_removal_effect"]].to_numpy()
    assert ((effects >= 0) & (effects <= 1)).all()


def test_share_out_adds_up_exactly():
    rng = np.random.default_rng(1)
    for _ in range(200):
        effects = rng.random(rng.integers(1, 40))
        total = float(rng.uniform(0, 1e6))
        assert math.fsum(share_out(total, effects)) == total
    assert (share_out(5.0, np.zeros(3)) == 0).all()


@pytest.mark.parametrize("order", [2, 3])
def test_dense_sparse_and_iterative_solvers_agree(order):
    chain = build_chain(count_transitions(random_paths(seed=11, n=600, channels=8), order))
    assert chain.n_states > 50
    dense = absorption(chain, method="dense")
    for method in ("sparse", "iterative"):
        assert absorption(chain, method=method) == pytest.approx(dense, rel=1e-12)
    for channel in chain.channels:
        dense = absorption(chain, channel, method="dense")
        for method in ("sparse", "iterative"):
            assert absorption(chain, channel, method=method) == pytest.approx(dense, rel=1e-11)
    counts = count_transitions(random_paths(seed=11, n=600, channels=8), order)
    tables = [attribute(counts, method=m).channels for m in ("dense", "sparse", "iterative")]
    for table in tables[1:]:
        pd.testing.assert_frame_equal(table, tables[0], rtol=1e-11, atol=1e-13)


def test_results_identical_across_runs_and_worker_counts():
    rows = random_paths(seed=5, n=800, channels=10)
    first = attribute_paths(rows, order=2, max_workers=1).channels
    again = attribute_paths(list(reversed(rows)), order=2, max_workers=1).channels
    threaded = attribute_paths(rows, order=2, max_workers=4).channels
    # Row order of the input does not matter (exact decimal sums, sorted states), nor threads.
    pd.testing.assert_frame_equal(first, again, check_exact=True)
    pd.testing.assert_frame_equal(first, threaded, check_exact=True)
    assert list(first["channel"]) == sorted(first["channel"])


def test_solve_method_is_validated():
    chain = build_chain(count_transitions([(["A"], 1, 1, 1)], 1))
    with pytest.raises(ValueError, match="solve method"):
        absorption(chain, method="monte-carlo")


# ----------------------------------------------------------------------------- order choice


def second_order_paths() -> list[tuple]:
    # Conversion depends on the last two channels: "... A > B" converts 80 %, "... C > B" 10 %.
    # Order 1 sees only "B" at the end and cannot tell them apart; order 2 can.
    rows = []
    prefixes = [[], ["D"], ["E"], ["D", "E"], ["E", "D"], ["F"], ["D", "F"], ["F", "E"]]
    for prefix in prefixes:
        rows.append(([*prefix, "A", "B"], 8.0, 80.0, 2.0))
        rows.append(([*prefix, "C", "B"], 1.0, 10.0, 9.0))
    return rows


def test_choose_order_finds_the_second_order_dependence():
    choice = choose_order(second_order_paths(), folds=4)
    assert choice.order == 2
    scores = choice.scores.set_index("order")
    assert scores.loc[2, "log_loss"] < scores.loc[1, "log_loss"]
    assert "order 2 chosen" in choice.reason and "log-loss" in choice.reason
    assert list(scores.index) == [1, 2, 3, 4]
    again = choose_order(second_order_paths(), folds=4)
    pd.testing.assert_frame_equal(choice.scores, again.scores, check_exact=True)


def test_choose_order_ties_go_to_the_lower_order():
    # Single-channel paths: every order has the same states and predictions.
    rows = [([c], float(i % 3), 1.0, 2.0) for i, c in enumerate("ABCDEFGH")]
    choice = choose_order(rows)
    assert choice.order == 1
    assert choice.scores["log_loss"].nunique() == 1


def test_an_order_whose_held_out_states_are_all_unseen_does_not_win():
    """Two paths, each the only one that ends in its order-2 state. Worked out by hand (folds
    split by path, smoothing 1): at orders 2-4 each held-out journey gets its folds' training
    conversion rate kept off 0 and 1 (1/6 for "A", 5/6 for "B > A"), log-loss ln 6; at order
    1, "A" ends in the state that ended "B > A" twice without converting: (0 + 1/6) / 3 = 1/18,
    log-loss ln 18. The lowest log-loss (ln 6, orders 2-4) is the training rate alone, which
    is no evidence for any order: the lowest order is kept, and the reason says why."""
    rows = [(["A"], 2.0, 20.0, 0.0), (["B", "A"], 0.0, 0.0, 2.0)]
    choice = choose_order(rows)
    scores = choice.scores.set_index("order")
    assert scores.loc[1, "log_loss"] == pytest.approx(math.log(18))
    for order in (2, 3, 4):
        assert scores.loc[order, "log_loss"] == pytest.approx(math.log(6))
        assert scores.loc[order, "unseen_share"] == 1.0
    assert choice.order == 1
    assert (f"no order beats the training conversion rate (log-loss {math.log(6):.6f})"
            in choice.reason)


def test_choose_order_without_journeys():
    choice = choose_order([(["A"], 0, 0, 0)])
    assert choice.order == 1 and "no journeys" in choice.reason


def test_attribute_paths_with_automatic_order():
    result = attribute_paths(second_order_paths(), order=None)
    assert result.order == result.order_choice.order
    assert result.order in (1, 2, 3, 4)


# ----------------------------------------------------------------------------- path files


def write(tmp_path, text: str, name: str = "paths.csv") -> str:
    target = tmp_path / name
    target.write_text(text, encoding="utf-8")
    return str(target)


def test_path_file_keeps_names_and_fractions(tmp_path):
    path = write(
        tmp_path,
        "path;total_conversions;total_conversion_value;total_null\n"
        "Paid Search > E-mail > Paid Search;1.5;30.25;0.5\n"
        "Café Crème > Paid Search;0;0;2\n"
        "\n",
    )
    table = read_path_file(path)
    assert table["channels"].tolist() == [
        ["Paid Search", "E-mail", "Paid Search"],
        ["Café Crème", "Paid Search"],
    ]
    assert table["total_conversions"].tolist() == [1.5, 0.0]
    assert table["total_conversion_value"].tolist() == [30.25, 0.0]
    assert table["total_null"].tolist() == [0.5, 2.0]


def test_run_path_file_writes_a_deterministic_csv(tmp_path):
    # The two-channel hand case again, as a file.
    path = write(
        tmp_path,
        "path;total_conversions;total_conversion_value;total_null\nB;1;30;0\nA;1;10;0\nA > B;0;0;2\n",
    )
    output = tmp_path / "out" / "attribution.csv"
    result = run_path_file(path, order=1, output=str(output))
    assert list(result.columns) == [
        "channel",
        "removal_effect",
        "total_conversions",
        "total_conversion_value",
    ]
    assert result["channel"].tolist() == ["A", "B"]
    assert result["total_conversions"].tolist() == pytest.approx([1.25, 0.75], rel=1e-12)
    written = pd.read_csv(output)
    pd.testing.assert_frame_equal(written, result, check_exact=False, rtol=1e-15)
    first = output.read_bytes()
    run_path_file(path, order=1, output=str(output))
    assert output.read_bytes() == first


def test_run_path_file_automatic_order_says_why(tmp_path, capsys):
    lines = ["path;total_conversions;total_conversion_value;total_null"]
    lines += [
        f"{' > '.join(c)};{conv};{value};{null}" for c, conv, value, null in second_order_paths()
    ]
    path = write(tmp_path, "\n".join(lines) + "\n")
    result = run_path_file(path, order=None)
    err = capsys.readouterr().err
    assert f"order {result.attrs['order']} chosen" in err and "log-loss" in err
    assert result.attrs["order_reason"] in err


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "path;total_conversions;total_conversion_value;total_null\n;1;2;0\n",
            r"paths\.csv line 2: empty path",
        ),
        (
            "path;total_conversions;total_conversion_value;total_null\nA >  > B;1;2;0\n",
            r"line 2: empty channel name",
        ),
        (
            "path,total_conversions,total_conversion_value,total_null\nA > B,1,2,0\n",
            r"paths\.csv line 1: unknown separator, expected ';'; the header looks ','-separated",
        ),
        (
            "path;total_conversions;total_conversion_value;total_null\nA;1;2;0\nA > B,1,2,0\n",
            r"line 3: expected 4 fields separated by ';', found 1 \(the line looks ','-separated\)",
        ),
        (
            "path;total_conversions;total_conversion_value;total_null\nA;1;2;0\nB;-1;0;0\n",
            r"paths\.csv line 3: total_conversions is negative: -1",
        ),
        (
            "path;total_conversions;total_conversion_value;total_null\nA;1;2;-0.5\n",
            r"line 2: total_null is negative",
        ),
        (
            "path;total_conversions;total_conversion_value;total_null\nA;one;2;0\n",
            r"line 2: total_conversions is not a number: 'one'",
        ),
        (
            "path;total_conversions;total_conversion_value;total_null\nA;1;2,5;0\n",
            r"line 2: total_conversion_value is not a number: '2,5' \(use '\.' as the decimal point\)",
        ),
        (
            "path;total_conversions;total_conversion_value;total_null\nA;1;nan;0\n",
            r"line 2: total_conversion_value is not a finite number",
        ),
        (
            "path;total_conversions;total_conversion_value;total_null\nA;1;;0\n",
            r"line 2: total_conversion_value is not a number: empty",
        ),
        (
            "path;total_conversions;total_conversion_value\nA;1;2\n",
            r"paths\.csv line 1: missing column\(s\) total_null",
        ),
        (
            "path;total_conversions;total_conversion_value;total_null\nA;1;2\n",
            r"line 2: expected 4 fields separated by ';', found 3",
        ),
        (
            "path;total_conversions;total_conversion_value;total_null\n",
            r"no paths after the header",
        ),
        ("", r"paths\.csv: empty file"),
    ],
)
def test_path_file_validation_names_file_and_line(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(InputDataError, match=message):
        read_path_file(path)


def test_path_file_missing_and_bad_order(tmp_path):
    with pytest.raises(InputDataError, match="not found"):
        read_path_file(str(tmp_path / "nope.csv"))
    path = write(tmp_path, "path;total_conversions;total_conversion_value;total_null\nA;1;2;0\n")
    with pytest.raises(InputDataError, match="order 5 is not supported"):
        run_path_file(path, order=5)
