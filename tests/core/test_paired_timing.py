"""Paired timing: rounds back to back, the median round's ratio, more rounds while they straddle an aim."""

import pytest

from edgeopt.core.paired_timing import (MAX_ROUNDS, PRECISE_ROUNDS, ROUNDS, median_uncertainty, paired_speedup,
                                        settled_below, time_beside, timing_window)


def test_a_slow_spell_that_stretches_a_round_does_not_move_the_speedup():
    """Rounds are paired: the machine slowed the third round by half, both timings alike; the fastest-over-fastest
    of rounds minutes apart would have mixed the spells, the median pair's ratio does not."""
    theirs = [2.0, 2.0, 3.0, 2.1, 2.0]
    mine = [1.5, 1.5, 2.25, 1.575, 1.5]
    assert paired_speedup(mine, theirs) == pytest.approx(0.75)
    assert paired_speedup([1.5, 1.5, 0.5, 1.5, 9.0], theirs) == pytest.approx(0.75)  # an outlier round either way


def _bench_with_ratios(ratios):
    """A bench timing the unpruned bundle at 2 ms and the candidate at the next of ``ratios`` times that."""
    pending = iter(ratios)
    return lambda path: 2.0 if path.name == "unpruned" else 2.0 * next(pending)


def test_rounds_are_added_only_while_they_disagree_on_the_side_of_the_aim(tmp_path):
    unpruned, bundle = tmp_path / "unpruned", tmp_path / "bundle"
    clear = _bench_with_ratios([0.6, 0.65, 0.8, 0.62, 0.6] + [0.6] * 20)  # 4 of 5 below the aim
    assert len(time_beside(clear, bundle, unpruned, aim=0.735)[0]) == ROUNDS
    noisy = _bench_with_ratios([0.5, 1.1, 0.7, 0.9, 0.72] + [0.6] * 20)  # 3 of 5: more rounds, until 3/4 agree
    mine, theirs = time_beside(noisy, bundle, unpruned, aim=0.735)
    assert len(mine) == 8 and paired_speedup(mine, theirs) <= 0.735
    coin = _bench_with_ratios([0.5, 1.1] * 20)  # never settles: capped
    assert len(time_beside(coin, bundle, unpruned, aim=0.735)[0]) == MAX_ROUNDS
    assert len(time_beside(_bench_with_ratios([0.5, 1.1] * 20), bundle, unpruned)[0]) == ROUNDS  # no aim: no more


def test_a_precise_measurement_adds_rounds_until_its_median_is_known_within_the_tolerance(tmp_path):
    """An allocation probe's time saved is a few percent: five rounds spread 0.74-1.0 on a shared VM decide
    nothing, so rounds are added while the median's confidence interval is wider than the tolerance."""
    unpruned, bundle = tmp_path / "unpruned", tmp_path / "bundle"
    steady = _bench_with_ratios([0.80, 0.81, 0.80, 0.79, 0.80] + [0.8] * 30)
    assert len(time_beside(steady, bundle, unpruned, tolerance=0.02)[0]) == ROUNDS
    spread = [0.74, 0.95, 0.80, 1.0, 0.78]
    assert median_uncertainty([2 * r for r in spread], [2.0] * 5) > 0.02
    mine, theirs = time_beside(_bench_with_ratios(spread + [0.8] * 30), bundle, unpruned, tolerance=0.02)
    assert ROUNDS < len(mine) < PRECISE_ROUNDS and median_uncertainty(mine, theirs) <= 0.02
    never = _bench_with_ratios([0.6, 1.0] * 30)  # never settles: capped
    assert len(time_beside(never, bundle, unpruned, tolerance=0.02)[0]) == PRECISE_ROUNDS


def test_a_fast_artifact_is_timed_long_enough_and_a_slow_one_at_least_runs_times():
    assert timing_window(2.0, 30) == (100, 250)  # 0.2 s of warm-up, 0.5 s of timed calls
    assert timing_window(200.0, 30) == (10, 30)


def test_a_pair_settles_below_a_target_when_three_rounds_in_four_do():
    assert settled_below([0.7, 0.72, 0.74, 1.1], 0.75)  # one outlier round decides nothing
    assert not settled_below([0.7, 0.72, 0.8, 1.1], 0.75)
