"""The schedule planner (spectrum_cache.planner): its forecast weights, its score and its search, on toy
trajectories whose best schedules are known in closed form."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from spectrum_cache.forecast import make_forecaster
from spectrum_cache.planner import RecordedTrajectory, ScheduleScorer, forecast_weights, search_schedule
from spectrum_cache.schedule import adaptive_schedule


def _forecasts(make, schedule, features):
    """What the forecaster itself gives at every step of ``features`` (N, D) for ``schedule``."""
    forecaster = make()
    out = []
    for step, feature in enumerate(features):
        if step in schedule:
            forecaster.update(step, feature)
            out.append(feature)
        else:
            out.append(forecaster.predict(step))
    return torch.stack(out)


@pytest.mark.parametrize("kind,history,weight", [("chebyshev", None, 0.5), ("chebyshev", None, 1.0),
                                                 ("chebyshev", 4, 0.75), ("reuse", None, 0.5),
                                                 ("taylor1", None, 0.5), ("taylor2", None, 0.5)])
def test_forecast_weights_reproduce_the_forecaster_on_any_features(kind, history, weight):
    n = 20
    schedule = adaptive_schedule(n, 5, 2, 0.75)

    def make():
        return make_forecaster(kind, n, 4, 0.1, weight, None, history)

    features = torch.randn(n, 37, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    weights = torch.from_numpy(forecast_weights(make, schedule, n))
    expected = _forecasts(make, set(schedule), features.float()).double()
    torch.testing.assert_close(weights @ features, expected, rtol=1e-4, atol=1e-4)


def test_forecast_weights_extrapolate_a_polynomial_exactly():
    """A feature that is a cubic in the step is forecast exactly by the pure Chebyshev fit (w = 1) without
    ridge: the weights must carry that (a sign error in the extrapolation would not)."""
    n = 16
    schedule = [0, 1, 2, 3, 4, 7, 11]

    def make():
        return make_forecaster("chebyshev", n, 3, 0.0, 1.0)

    steps = torch.arange(n, dtype=torch.float64)
    features = torch.stack([1 + 0.5 * steps - 0.02 * steps**2 + 0.001 * steps**3, 2 - steps / n], dim=1)
    weights = torch.from_numpy(forecast_weights(make, schedule, n))
    # The forecaster keeps float32 moments, so the weights hold float32 rounding, amplified by the
    # extrapolation; a wrong sign or axis would be off by O(1).
    torch.testing.assert_close(weights @ features, features, rtol=2e-3, atol=2e-3)
    assert (weights @ features - features).abs().max() < 1e-3


def _piecewise_constant(n, jumps, dim=8):
    """h_s = a_k for the k-th stretch between jumps, with orthonormal a_k: reuse is exact iff every jump is
    a compute step."""
    basis = torch.eye(dim, dtype=torch.float64)
    level = [sum(s >= j for j in jumps) for s in range(n)]
    return torch.stack([basis[k] for k in level])


def test_search_finds_the_closed_form_optimum_for_reuse():
    n, jumps = 24, (5, 13, 19)
    features = _piecewise_constant(n, jumps)
    scorer = ScheduleScorer(lambda: make_forecaster("reuse", n), [RecordedTrajectory.from_features(features)], n)
    result = search_schedule(scorer, n, len(jumps) + 1, seeds=[[0, 1, 2, 3]])
    assert result.schedule == (0, *jumps)
    assert result.score == pytest.approx(0.0, abs=1e-12)
    assert result.seed_scores[0] > 0.1  # the seed misses every jump
    # Closed form, checked by brute force over every schedule of that size: the optimum is unique.
    scores = {s: scorer((0, *s)) for s in itertools.combinations(range(1, n), len(jumps))}
    assert min(scores, key=scores.get) == jumps
    assert sorted(scores.values())[1] > 1e-3


def test_search_is_budget_exact_deterministic_and_never_worse_than_its_seeds():
    torch.manual_seed(0)
    n = 18
    walk = torch.cumsum(torch.randn(n, 30, dtype=torch.float64), dim=0)
    trajectories = [RecordedTrajectory.from_features(walk), RecordedTrajectory.from_features(walk.flip(0), 0.5)]

    def make():
        return make_forecaster("chebyshev", n, 4, 0.1, 0.5)

    scorer = ScheduleScorer(make, trajectories, n, step_sizes=[1.0 / n] * n, incoherent=0.5)
    for passes in (1, 2, 5, 9, n):
        seed = adaptive_schedule(n, min(passes, 5), 2, 0.75)[:passes]
        seeds = [seed] if len(seed) == passes else []
        first = search_schedule(scorer, n, passes, seeds=seeds)
        again = search_schedule(scorer, n, passes, seeds=seeds)
        assert first == again
        assert len(first.schedule) == passes and first.schedule[0] == 0
        assert len(set(first.schedule)) == passes and all(0 <= s < n for s in first.schedule)
        if seeds:
            assert first.score <= first.seed_scores[0] + 1e-15
    assert search_schedule(scorer, n, n).schedule == tuple(range(n))


def test_the_score_is_zero_for_every_step_and_grows_with_fewer_passes():
    n = 20
    features = torch.cumsum(torch.randn(n, 16, generator=torch.Generator().manual_seed(3), dtype=torch.float64), 0)
    scorer = ScheduleScorer(lambda: make_forecaster("chebyshev", n, 4, 0.1, 0.5),
                            [RecordedTrajectory.from_features(features)], n, incoherent=1.0)
    assert scorer(range(n)) == pytest.approx(0.0, abs=1e-12)
    dense, sparse = scorer(adaptive_schedule(n, 5, 2, 0.75)), scorer(adaptive_schedule(n, 5, 2, 3.0))
    assert 0 < dense < sparse


def test_the_score_matches_the_error_of_the_real_forecasts():
    """The Gram-matrix score equals the relative final-state error computed from the forecasts themselves."""
    n = 14
    features = torch.randn(n, 23, generator=torch.Generator().manual_seed(5), dtype=torch.float64).cumsum(0)
    sizes = np.linspace(0.2, 0.05, n)
    schedule = [0, 1, 2, 5, 9]

    def make():
        return make_forecaster("chebyshev", n, 4, 0.1, 0.5)

    scorer = ScheduleScorer(make, [RecordedTrajectory.from_features(features)], n, step_sizes=list(sizes))
    errors = _forecasts(make, set(schedule), features.float()).double() - features
    d = torch.from_numpy(sizes)
    expected = float((d @ errors).square().sum() / (d @ features).square().sum())
    assert scorer(schedule) == pytest.approx(expected, rel=1e-3)


def test_bad_budgets_and_seeds_are_refused_by_name():
    n = 10
    scorer = ScheduleScorer(lambda: make_forecaster("reuse", n), [RecordedTrajectory.from_features(torch.eye(n))], n)
    with pytest.raises(ValueError, match="passes must be an integer in \\[1, 10\\]"):
        search_schedule(scorer, n, 0)
    with pytest.raises(ValueError, match="passes"):
        search_schedule(scorer, n, 11)
    with pytest.raises(ValueError, match="seed schedule must hold 3"):
        search_schedule(scorer, n, 3, seeds=[[0, 1]])
    with pytest.raises(ValueError, match="with step 0"):
        search_schedule(scorer, n, 2, seeds=[[1, 2]])
    with pytest.raises(ValueError, match="has 10 steps, the plan 12"):
        ScheduleScorer(lambda: make_forecaster("reuse", 12), [RecordedTrajectory.from_features(torch.eye(n))], 12)
    with pytest.raises(ValueError, match="incoherent"):
        ScheduleScorer(lambda: make_forecaster("reuse", n), [RecordedTrajectory.from_features(torch.eye(n))], n,
                       incoherent=2.0)
