"""The schedule planner (spectrum_cache.planner): its forecast weights, its score and its search, on toy
trajectories whose best schedules are known in closed form."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from spectrum_cache.forecast import ReuseForecaster, make_forecaster
from spectrum_cache.planner import (LinearForecast, RecordedTrajectory, ScheduleScorer, forecast_weights,
                                    search_schedule)
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
                                                 ("chebyshev", 5, 0.75), ("reuse", None, 0.5),
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


# -- the batched search against the one-schedule-at-a-time search it replaced --------------------------
def _reference_score(make, trajectories, n, step_sizes, incoherent):
    """The score as first written: W from running the forecaster on one-hot features, one schedule at a time."""
    d = np.ones(n) if step_sizes is None else np.abs(np.asarray(step_sizes, float))
    coherent = sum(t.weight * t.gram / max(float(d @ t.gram @ d), 1e-300) for t in trajectories)
    per_step = sum(t.weight * t.gram / max(float(d**2 @ np.diag(t.gram)), 1e-300) for t in trajectories)

    def score(schedule):
        residual = forecast_weights(make, schedule, n) - np.eye(n)
        u = residual.T @ d
        value = (1 - incoherent) * float(u @ coherent @ u)
        if incoherent:
            value += incoherent * float(d**2 @ ((residual @ per_step) * residual).sum(axis=1))
        return value

    return score


def _reference_search(score, num_steps, passes, seeds=(), max_sweeps=20):
    """search_schedule as first written: every schedule scored on its own, in the order the search needs it."""
    cache = {}

    def f(schedule):
        key = tuple(sorted(schedule))
        if key not in cache:
            cache[key] = score(key)
        return cache[key]

    chosen = {0}
    while len(chosen) < passes:
        chosen.add(min((s for s in range(num_steps) if s not in chosen), key=lambda s: (f(chosen | {s}), s)))

    def improve(start):
        current, current_score = set(start), f(start)
        for _ in range(max_sweeps):
            moved = False
            for old in sorted(current - {0}):
                for new in range(1, num_steps):
                    if new in current:
                        continue
                    candidate = (current - {old}) | {new}
                    if f(candidate) < current_score:
                        current, current_score, moved = candidate, f(candidate), True
                        break
            if not moved:
                break
        return current

    finals = [improve(start) for start in [chosen, *[set(seed) for seed in seeds]]]
    winner = min(finals, key=lambda s: (f(s), tuple(sorted(s))))
    return tuple(sorted(winner)), f(winner), len(cache), tuple(f(seed) for seed in seeds)


def _trajectories(n, seed):
    """Feature trajectories shaped like recorded ones: a smooth drift along the steps, plus a random walk."""
    generator = torch.Generator().manual_seed(seed)
    steps = torch.linspace(-1, 1, n, dtype=torch.float64)[:, None]
    out = []
    for weight in (1.0, 0.5):
        smooth = sum(torch.randn(1, 40, generator=generator, dtype=torch.float64) * steps**p for p in range(4))
        walk = 0.05 * torch.randn(n, 40, generator=generator, dtype=torch.float64).cumsum(0)
        out.append(RecordedTrajectory.from_features(smooth + walk, weight))
    return out


FORECASTERS = [("chebyshev", None, 4, 0.1, 0.5), ("chebyshev", None, 4, 0.1, 1.0), ("chebyshev", 3, 2, 1e-4, 0.75),
               ("chebyshev", 5, 4, 0.1, 0.0), ("reuse", None, 4, 0.1, 0.5), ("taylor1", None, 4, 0.1, 0.5),
               ("taylor2", None, 4, 0.1, 0.5)]


@pytest.mark.parametrize("kind,history,degree,ridge,weight", FORECASTERS)
@pytest.mark.parametrize("shifted", [False, True])
def test_the_closed_form_weights_are_the_forecasters(kind, history, degree, ridge, weight, shifted):
    """LinearForecast writes down what running the forecaster on one-hot features gives, for every forecaster
    calibrate plans with, on the step axis and on a shifted time axis."""
    n = 24
    times = list(np.linspace(0, n - 1, n) ** 1.3 / (n - 1) ** 0.3) if shifted else None

    def make():
        return make_forecaster(kind, n, degree, ridge, weight, times, history)

    rng = np.random.default_rng(7)
    schedules = np.array([sorted({0, *rng.choice(np.arange(1, n), 7, replace=False).tolist()}) for _ in range(12)])
    closed = LinearForecast.of(make()).weights(schedules)
    for schedule, weights in zip(schedules, closed):
        # float32 rounding in the forecaster's sums; a wrong term would be off by O(0.01) or more
        np.testing.assert_allclose(weights, forecast_weights(make, schedule.tolist(), n), rtol=0, atol=2e-5)


def test_an_unknown_forecaster_is_run_itself():
    class Halved(ReuseForecaster):
        def _forecast(self, step):
            return super()._forecast(step) / 2

    n = 10
    assert LinearForecast.of(Halved(n)) is None
    scorer = ScheduleScorer(lambda: Halved(n), [RecordedTrajectory.from_features(torch.eye(n))], n)
    # the fallback path runs the forecaster: the same number as the reference score
    expected = _reference_score(lambda: Halved(n), scorer.trajectories, n, None, 0.0)([0, 5])
    assert scorer([0, 5]) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("kind,history,degree,ridge,weight", FORECASTERS)
def test_the_batched_search_makes_the_reference_searchs_decisions(kind, history, degree, ridge, weight):
    """Same schedule, score, evaluation count and seed score as the one-at-a-time search with the forecaster
    run itself, for each score mix and budget."""
    n = 20
    trajectories = _trajectories(n, seed=len(kind) + (history or 0))
    sizes = list(np.linspace(0.08, 0.02, n))

    def make():
        return make_forecaster(kind, n, degree, ridge, weight, None, history)

    for passes, incoherent in ((6, 0.0), (6, 0.5), (9, 1.0)):
        seed = adaptive_schedule(n, 4, 2, 0.75)[:passes]
        seeds = [seed] if len(seed) == passes else []
        new = search_schedule(ScheduleScorer(make, trajectories, n, sizes, incoherent), n, passes, seeds=seeds)
        schedule, score, evaluations, seed_scores = _reference_search(
            _reference_score(make, trajectories, n, sizes, incoherent), n, passes, seeds)
        assert new.schedule == schedule and new.evaluations == evaluations
        assert new.score == pytest.approx(score, rel=1e-4)
        assert new.seed_scores == pytest.approx(seed_scores, rel=1e-4)


def test_the_batched_search_agrees_with_brute_force_on_the_greedy_step():
    """Every schedule of 3 passes of 12 scored one at a time: the batch scores are the same numbers."""
    n = 12
    trajectories = _trajectories(n, seed=3)

    def make():
        return make_forecaster("chebyshev", n, 4, 0.1, 0.5)

    scorer = ScheduleScorer(make, trajectories, n, None, 0.5)
    schedules = [(0, *pair) for pair in itertools.combinations(range(1, n), 2)]
    reference = _reference_score(make, trajectories, n, None, 0.5)
    np.testing.assert_allclose(scorer.score_many(schedules), [reference(s) for s in schedules], rtol=1e-4)
    best = min(schedules, key=lambda s: (reference(s), s))
    assert min(zip(scorer.score_many(schedules), schedules))[1] == best
