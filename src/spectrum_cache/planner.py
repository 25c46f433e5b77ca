"""Which steps should run the network: a search over schedules, scored with Spectrum's own forecaster.

Pure math, no diffusers (``calibrate.py`` records the trajectories and checks the winners end to end).

Every forecaster here is linear in the recorded features with weights that depend only on the
schedule: the forecast at step s is ``sum_j W[s, j] h_j`` over the steps j recorded before s. So the
weights ``W`` of a schedule come from running the forecaster itself on one-hot "features" (``h_j = e_j``),
and the forecast error of any recorded trajectory H (N x D) follows from its Gram matrix ``G = H H^T``
(N x N) alone, whatever D is:

- the error at step s is ``e_s = ((W - I) H)_s``, with ``||e_s||^2 = ((W - I) G (W - I)^T)_ss``;
- the sampler adds each step's output with its step size d_s (an Euler step of sigma_s - sigma_{s+1}), so
  to first order the final state is off by ``sum_s d_s e_s = u^T H`` with ``u = (W - I)^T d`` (open loop:
  the drift a forecast causes in later inputs is not modelled; ``calibrate`` checks the winners by real
  runs for that).

The score of a schedule is the relative final error ``u^T G u / d^T G d``, summed over the trajectories
(``coherent``), optionally mixed with the per-step errors ``sum_s d_s^2 ||e_s||^2 / sum_s d_s^2 ||h_s||^2``
(``incoherent``), which does not let errors of opposite sign cancel.

The search is budget-exact (every schedule it looks at runs exactly K steps, step 0 among them) and
deterministic: a greedy build (add the step that lowers the score most), then first-improvement local
search moving one compute step at a time, started from the greedy schedule and from every seed schedule
given (the paper's adaptive schedule among them), keeping the best.

Speed. Running the forecaster on one-hot features for every schedule the search looks at costs about 5 ms
a schedule in Python, and a calibration looks at tens of thousands (minutes). For the forecasters Spectrum
ships (``LinearForecast``) the weights are written in closed form instead, for a whole batch of schedules at
once in NumPy: every move the local search may make from one compute step, or every step the greedy build may
add, is scored in one batch. The search takes the same decisions in the same order as one schedule at a time
(the first improving move, ties to the earlier step); the batch only scores moves it then does not take. The
closed form is float64 where the forecaster sums one-hot features in float32, so scores agree to float32
rounding (tests/test_planner.py compares both searches).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import cast

import numpy as np
import torch

from .forecast import (FeatureForecaster, ReuseForecaster, SpectrumForecaster, TaylorForecaster,
                       WindowedSpectrumForecaster)
from .forecast.chebyshev import _ridge_inverse

ForecasterFactory = Callable[[], FeatureForecaster]


@dataclass(frozen=True)
class RecordedTrajectory:
    """What the planner needs of one recorded feature trajectory: ``gram`` = H H^T over its N steps (float64),
    and ``weight``, its share in the score."""

    gram: np.ndarray
    weight: float = 1.0

    @classmethod
    def from_features(cls, features: torch.Tensor, weight: float = 1.0) -> RecordedTrajectory:
        """From the features of every step, stacked as (N, ...) (a subsample of their elements will do: the
        forecast treats every element alike)."""
        flat = features.reshape(features.shape[0], -1).double()
        return cls((flat @ flat.T).cpu().numpy(), weight)


def forecast_weights(make: ForecasterFactory, schedule: Iterable[int], num_steps: int,
                     cache: ForecastCache | None = None) -> np.ndarray:
    """W (N x N): row s holds the weights of the recorded features in what the network or the forecast gives
    at step s (e_s on a compute step). ``make`` builds a fresh forecaster for ``num_steps`` steps; ``cache``
    (of the same ``make``) reuses what earlier schedules with the same first compute steps computed."""
    compute = set(schedule)
    cache = ForecastCache(make, num_steps) if cache is None else cache
    weights = np.zeros((num_steps, num_steps))
    prefix: tuple[int, ...] = ()
    for step in range(num_steps):
        if step in compute or not prefix:
            weights[step, step] = 1.0
            prefix += (step,)
        else:
            weights[step] = cache.row(prefix, step)
    return weights


@dataclass(frozen=True)
class LinearForecast:
    """A forecaster's weights in closed form, for many schedules at once: what ``forecast_weights`` gets by
    running the forecaster on one-hot features, without running it.

    ``kind`` is ``"chebyshev"`` (Spectrum: ridge fit over every recorded step, or the last ``history``, blended
    with the linear step by ``blend_weight``), ``"taylor"`` (finite differences up to ``order``; order 0 is
    reuse). ``times`` is each step's position on the forecaster's time axis.
    """

    kind: str
    num_steps: int
    times: tuple[float, ...]
    degree: int = 0
    ridge_lambda: float = 0.0
    blend_weight: float = 1.0
    history: int | None = None
    order: int = 0

    @classmethod
    def of(cls, forecaster: FeatureForecaster) -> LinearForecast | None:
        """The closed form of ``forecaster``'s class, or None for a class it does not know (then the planner
        runs the forecaster itself). Exact classes only: a subclass may forecast otherwise."""
        n = forecaster.num_inference_steps
        times = tuple(forecaster.time(step) for step in range(n))
        # type(...) is: exact classes, which is also how mypy narrows the forecaster to each.
        if type(forecaster) is SpectrumForecaster or type(forecaster) is WindowedSpectrumForecaster:
            history = forecaster.history if type(forecaster) is WindowedSpectrumForecaster else None
            return cls("chebyshev", n, times, forecaster.degree, forecaster.ridge_lambda, forecaster.blend_weight,
                       history)
        if type(forecaster) is TaylorForecaster:
            return cls("taylor", n, times, order=forecaster.order)
        if type(forecaster) is ReuseForecaster:
            return cls("taylor", n, times, order=0)
        return None

    def coefficients(self, compute: np.ndarray) -> np.ndarray:
        """(B, N, K): for B schedules of K compute steps each (``compute``, (B, K), sorted, step 0 first), the
        weight of the j-th compute step's feature in what step s gets. A compute step's row is its own one-hot."""
        compute = np.asarray(compute, dtype=np.int64)
        batch, k = compute.shape
        n = self.num_steps
        times = np.asarray(self.times)
        is_compute = compute_mask(compute, n)
        # seg[b, s]: the index of the last compute step at or before s (the forecast's newest record).
        seg = np.cumsum(is_compute, axis=1) - 1
        if self.kind == "taylor":
            delta = times[None, :] - times[compute[np.arange(batch)[:, None], seg]]
            coef = self._taylor(compute, seg, delta)
        else:
            coef = self._chebyshev(compute, seg, times)
        coef[is_compute] = 0.0
        index = np.nonzero(is_compute)
        coef[index[0], index[1], seg[index]] = 1.0
        return coef

    def weights(self, compute: np.ndarray) -> np.ndarray:
        """(B, N, N): ``forecast_weights`` of each schedule."""
        compute = np.asarray(compute, dtype=np.int64)
        coef = self.coefficients(compute)
        out = np.zeros((compute.shape[0], self.num_steps, self.num_steps))
        np.add.at(out, (np.arange(len(compute))[:, None, None], np.arange(self.num_steps)[None, :, None],
                        compute[:, None, :]), coef)
        return out

    def _taylor(self, compute: np.ndarray, seg: np.ndarray, delta: np.ndarray) -> np.ndarray:
        batch, k = compute.shape
        times = np.asarray(self.times)
        # factors[b, i, q]: the q-th finite difference kept after the i-th record, as weights on the records;
        # d_{q+1} = (d_q - d_q of the record before) / (time between the two records), as TaylorForecaster does.
        factors = np.zeros((batch, k, self.order + 1, k))
        factors[:, np.arange(k), 0, np.arange(k)] = 1.0
        for i in range(1, k):
            distance = (times[compute[:, i]] - times[compute[:, i - 1]])[:, None]
            for q in range(min(self.order, i)):
                factors[:, i, q + 1] = (factors[:, i, q] - factors[:, i - 1, q]) / distance
        rows = np.arange(batch)[:, None]
        kept = factors[rows, seg]  # (B, N, order + 1, K)
        powers = np.stack([delta**q / math.factorial(q) for q in range(self.order + 1)], axis=-1)
        return np.einsum("bsqj,bsq->bsj", kept, powers)

    def _chebyshev(self, compute: np.ndarray, seg: np.ndarray, times: np.ndarray) -> np.ndarray:
        batch, k = compute.shape
        n, w = self.num_steps, self.blend_weight
        rows = np.arange(batch)[:, None]
        coef = np.zeros((batch, n, k))
        if w > 0:
            basis = chebyshev_matrix(2.0 * times / n - 1.0, self.degree)  # (N, M+1): T(tau_s)
            x = basis[compute]  # (B, K, M+1)
            outer = x[:, :, :, None] * x[:, :, None, :]
            if self.history is None:
                gram = np.cumsum(outer, axis=1)
            else:  # the last `history` records: summed directly, not as a difference of sums
                gram = outer.copy()
                for back in range(1, min(self.history, k)):
                    gram[:, back:] += outer[:, :-back]
            # a[b, s] = (X^T X + lambda I)^-1 T(tau_s) of the fit step s forecasts from; w X a its weights
            a = ridge_weights(gram, self.ridge_lambda, seg, basis)
            coef = w * (a @ np.swapaxes(x, 1, 2))
            j = np.arange(k)[None, None, :]
            window = j <= seg[:, :, None]
            if self.history is not None:
                window &= j > seg[:, :, None] - self.history
            coef *= window
        # the linear part, (1 - w) (h_last + k (h_last - h_prev)), k = (t_s - t_last) / (t_last - t_prev)
        last_time = times[compute[rows, seg]]
        has_prev = seg >= 1
        prev_time = times[compute[rows, np.maximum(seg - 1, 0)]]
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(has_prev, (times[None, :] - last_time) / np.where(has_prev, last_time - prev_time, 1.0), 0.0)
        linear = w < 1
        on_last = np.where(has_prev & linear, (1 - w) * (1 + ratio), 1.0 - w)
        on_prev = np.where(has_prev & linear, -(1 - w) * ratio, 0.0)
        coef[rows, np.arange(n)[None, :], seg] += on_last
        prev_rows, prev_steps = np.nonzero(has_prev)
        coef[prev_rows, prev_steps, seg[prev_rows, prev_steps] - 1] += on_prev[prev_rows, prev_steps]
        return coef


def compute_mask(compute: np.ndarray, num_steps: int) -> np.ndarray:
    """(B, N) booleans: which steps of each schedule compute."""
    mask = np.zeros((len(compute), num_steps), dtype=bool)
    mask[np.arange(len(compute))[:, None], compute] = True
    return mask


def chebyshev_matrix(tau: np.ndarray, degree: int) -> np.ndarray:
    """(len(tau), degree + 1): chebyshev_basis of every tau, by the same recurrence."""
    columns = [np.ones_like(tau), tau][: degree + 1]
    while len(columns) <= degree:
        columns.append(2.0 * tau * columns[-1] - columns[-2])
    return np.stack(columns, axis=-1)


def ridge_weights(grams: np.ndarray, ridge_lambda: float, seg: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """(B, N, M+1): a[b, s] = (grams[b, seg[b, s]] + lambda I)^-1 targets[s], for Gram matrices ``grams``
    (B, K, M+1, M+1), solved by Cholesky as the forecaster does. A stack with a singular system falls back to
    the forecaster's own one-at-a-time inverse (with its diagonal jitter)."""
    batch, k, size, _ = grams.shape
    rows = np.arange(batch)[:, None]
    matrices = grams + ridge_lambda * np.eye(size)
    try:
        factor = np.linalg.cholesky(matrices)
    except np.linalg.LinAlgError:
        flat = grams.reshape(-1, size, size)
        inverse = np.stack([_ridge_inverse(gram, ridge_lambda)[0] for gram in flat]).reshape(grams.shape)
        return (inverse[rows, seg] @ targets[:, :, None])[..., 0]
    # L^-1 by forward substitution, an entry at a time over the whole stack, then A^-1 = L^-T L^-1: numpy's
    # stacked solve and inv cost microseconds per (M+1) x (M+1) system, which made them most of the search's time.
    inverse = np.zeros_like(factor)
    for i in range(size):
        inverse[..., i, i] = 1.0 / factor[..., i, i]
        for j in range(i):
            inverse[..., i, j] = -(factor[..., i, j:i] * inverse[..., j:i, j]).sum(-1) / factor[..., i, i]
    # (B, K, M+1, N): every fit's weights for every target. Stacked small products, not one large one: a large
    # one goes to OpenBLAS's threads, which on a busy machine made the whole search three times slower.
    solved = (np.swapaxes(inverse, -1, -2) @ inverse) @ targets.T
    return solved[rows, seg, :, np.arange(targets.shape[0])[None, :]]

class ForecastCache:
    """Forecast rows by (compute steps so far, step), and forecaster states by compute steps so far.

    A forecast at step s depends only on the compute steps before s, so schedules that share their first
    compute steps (the local search moves one step at a time) share those rows and states."""

    MAX_ENTRIES = 200_000  # then start over: memory stays bounded, results do not change

    def __init__(self, make: ForecasterFactory, num_steps: int) -> None:
        self.make, self.num_steps = make, num_steps
        self.eye = torch.eye(num_steps, dtype=torch.float64)
        self.rows: dict[tuple[tuple[int, ...], int], np.ndarray] = {}
        self.states: dict[tuple[int, ...], FeatureForecaster] = {}

    def row(self, prefix: tuple[int, ...], step: int) -> np.ndarray:
        key = (prefix, step)
        if key not in self.rows:
            if len(self.rows) + len(self.states) > self.MAX_ENTRIES:
                self.rows.clear()
                self.states.clear()
            self.rows[key] = self._state(prefix).predict(step).double().numpy()
        return self.rows[key]

    def _state(self, prefix: tuple[int, ...]) -> FeatureForecaster:
        """The forecaster after recording the one-hot features of ``prefix`` (kept; callers only predict)."""
        if prefix in self.states:
            return self.states[prefix]
        # Built afresh: K updates with N-element features cost less than copying a forecaster.
        forecaster = self.make()
        for step in prefix:
            forecaster.update(step, self.eye[step], check_finite=False)
        self.states[prefix] = forecaster
        return forecaster


@dataclass(frozen=True)
class ScheduleScorer:
    """The score of a schedule on some recorded trajectories (lower is better); see the module docstring.

    Args:
        make: a fresh forecaster of the config being planned (its kind, degree, lambda, w, history).
        trajectories: the recorded trajectories, all of ``num_steps`` steps.
        step_sizes: d_s, each step's weight in the final state (sigma_s - sigma_{s+1}); None: all equal.
        incoherent: the share of the per-step error term in the score, in [0, 1].
        weights_cache: forecast rows and states (a ForecastCache of ``make``), shared by scorers of the same
            forecaster: they cost more than the score itself.
    """

    make: ForecasterFactory
    trajectories: Sequence[RecordedTrajectory]
    num_steps: int
    step_sizes: Sequence[float] | None = None
    incoherent: float = 0.0
    weights_cache: ForecastCache | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not self.trajectories:
            raise ValueError("the planner needs at least one recorded trajectory.")
        for t in self.trajectories:
            if t.gram.shape != (self.num_steps, self.num_steps):
                raise ValueError(f"a recorded trajectory has {t.gram.shape[0]} steps, the plan {self.num_steps}.")
        if not 0.0 <= self.incoherent <= 1.0:
            raise ValueError(f"incoherent must be in [0, 1], got {self.incoherent!r}.")
        if self.step_sizes is not None and len(self.step_sizes) != self.num_steps:
            raise ValueError(f"step_sizes needs one value per step ({self.num_steps}), got {len(self.step_sizes)}.")

    def __call__(self, schedule: Iterable[int]) -> float:
        return float(self.score_many([schedule])[0])

    def score_many(self, schedules: Sequence[Iterable[int]]) -> np.ndarray:
        """The scores of many schedules, in one batch per schedule size. A schedule's steps outside [0, N) are
        ignored and step 0 always computes, as in ``forecast_weights``."""
        steps = [tuple(sorted({0, *(int(s) for s in schedule if 0 <= s < self.num_steps)})) for schedule in schedules]
        return self._score_steps(steps)

    def _score_steps(self, steps: Sequence[tuple[int, ...]]) -> np.ndarray:
        """score_many of schedules already as sorted tuples of steps in [0, N) with step 0 (the search's)."""
        scores = np.empty(len(steps))
        form = self._closed_form()
        by_size: dict[int, list[int]] = {}
        for index, schedule in enumerate(steps):
            by_size.setdefault(len(schedule), []).append(index)
        for indices in by_size.values():
            if form is None:
                scores[indices] = [self._by_forecaster(steps[i]) for i in indices]
            else:
                scores[indices] = self._by_closed_form(form, np.array([steps[i] for i in indices]))
        return scores

    def _closed_form(self) -> LinearForecast | None:
        if not hasattr(self, "_form"):  # frozen: set once, on first use
            object.__setattr__(self, "_form", LinearForecast.of(self.make()))
        form: LinearForecast | None = getattr(self, "_form")  # not a field: set above, like _sums below
        return form

    def _step_weights(self) -> np.ndarray:
        return np.ones(self.num_steps) if self.step_sizes is None else np.abs(np.asarray(self.step_sizes, float))

    def _by_closed_form(self, form: LinearForecast, compute: np.ndarray) -> np.ndarray:
        """The module docstring's score with R = W - I written through the compute steps: R's row s is
        coef_s on the compute steps minus e_s on a forecast step s, and 0 on a compute step."""
        d = self._step_weights()
        coherent, incoherent = self._combined(d)
        coef = form.coefficients(compute)  # (B, N, K)
        forecast = ~compute_mask(compute, self.num_steps)
        d_forecast = d * forecast
        rows = np.arange(len(compute))[:, None]
        u = -d_forecast  # u = R^T d
        u[rows, compute] += np.einsum("bs,bsj->bj", d_forecast, coef)
        scores = (1 - self.incoherent) * ((u @ coherent) * u).sum(axis=1)
        if self.incoherent:
            # ||r_s||^2 in the incoherent metric: coef^T G_CC coef - 2 coef^T G_Cs + G_ss
            on_compute = incoherent[compute[:, :, None], compute[:, None, :]]  # (B, K, K)
            cross = incoherent[compute]  # (B, K, N)
            error = (((coef @ on_compute) * coef).sum(axis=2) - 2 * np.einsum("bsj,bjs->bs", coef, cross)
                     + np.diag(incoherent))
            scores += self.incoherent * (d_forecast**2 * error).sum(axis=1)
        return scores

    def _by_forecaster(self, schedule: tuple[int, ...]) -> float:
        """The score with W from running the forecaster itself (a forecaster LinearForecast does not know)."""
        if self.weights_cache is None:  # frozen: set once, on first use
            object.__setattr__(self, "weights_cache", ForecastCache(self.make, self.num_steps))
        residual = forecast_weights(self.make, schedule, self.num_steps, self.weights_cache) - np.eye(self.num_steps)
        d = self._step_weights()
        u = residual.T @ d
        coherent, incoherent = self._combined(d)
        score = (1 - self.incoherent) * float(u @ coherent @ u)
        if self.incoherent:
            score += self.incoherent * float(d**2 @ ((residual @ incoherent) * residual).sum(axis=1))
        return score

    def _combined(self, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Both terms are linear in the Gram matrices: sum_t weight_t G_t / norm_t, computed once."""
        cached = getattr(self, "_sums", None)
        if cached is None:
            # Arrays, not sum()'s start 0: there is at least one trajectory (__post_init__).
            coherent = cast(np.ndarray, sum(t.weight * t.gram / max(float(d @ t.gram @ d), 1e-300)
                                            for t in self.trajectories))
            incoherent = cast(np.ndarray, sum(t.weight * t.gram / max(float(d**2 @ np.diag(t.gram)), 1e-300)
                                              for t in self.trajectories))
            cached = (coherent, incoherent)
            object.__setattr__(self, "_sums", cached)
        return cached


@dataclass(frozen=True)
class SearchResult:
    schedule: tuple[int, ...]
    score: float
    evaluations: int
    # The score of each seed schedule, by its position in the seeds given.
    seed_scores: tuple[float, ...] = ()


def check_budget(num_steps: int, passes: int) -> None:
    if isinstance(passes, bool) or not isinstance(passes, int) or not 1 <= passes <= num_steps:
        raise ValueError(f"passes must be an integer in [1, {num_steps}] (num_inference_steps), got {passes!r}.")


def search_schedule(score: Callable[[Iterable[int]], float], num_steps: int, passes: int,
                    seeds: Sequence[Sequence[int]] = (), max_sweeps: int = 20,
                    progress: Callable[[], None] | None = None) -> SearchResult:
    """The schedule of exactly ``passes`` compute steps (step 0 among them) of ``num_steps`` with the lowest
    ``score``: greedy build, then local search from it and from each seed of the right size (a seed of
    another size is refused). Deterministic; ties go to the earlier steps.

    ``score`` may also score many schedules in one call (a ``score_many`` method, as ScheduleScorer has):
    then each greedy step and each compute step's moves are scored as one batch. The decisions are those
    of scoring one schedule at a time; ``evaluations`` and ``progress`` count the schedules that search
    would have scored."""
    check_budget(num_steps, passes)
    for seed in seeds:
        if len(set(seed)) != passes or 0 not in seed or not all(0 <= s < num_steps for s in seed):
            raise ValueError(f"a seed schedule must hold {passes} distinct steps in [0, {num_steps}) with step 0, "
                             f"got {sorted(seed)}.")
    # The search's schedules are sorted tuples with step 0 already: a ScheduleScorer skips tidying them.
    many = score._score_steps if isinstance(score, ScheduleScorer) else getattr(score, "score_many", None)
    scored: dict[tuple[int, ...], float] = {}
    looked: set[tuple[int, ...]] = set()  # what a one-at-a-time search scores: the evaluations

    def batch(schedules: list[tuple[int, ...]]) -> list[float]:
        missing = [s for s in dict.fromkeys(schedules) if s not in scored]
        if missing:
            values = many(missing) if many is not None else [score(s) for s in missing]
            scored.update(zip(missing, (float(v) for v in values)))
        return [scored[s] for s in schedules]

    def look(schedules: Iterable[tuple[int, ...]]) -> None:
        for schedule in schedules:
            if schedule not in looked:
                looked.add(schedule)
                if progress is not None:
                    progress()

    def f(schedule: Iterable[int]) -> float:
        key = tuple(sorted(schedule))
        look([key])
        return batch([key])[0]

    chosen = {0}
    while len(chosen) < passes:
        options = [s for s in range(num_steps) if s not in chosen]
        keys = [tuple(sorted(chosen | {s})) for s in options]
        look(keys)
        best = min(zip(batch(keys), options))[1]
        chosen.add(best)

    def improve(start: set[int]) -> set[int]:
        current, current_score = set(start), f(start)
        for _ in range(max_sweeps):
            moved = False
            for old in sorted(current - {0}):
                rest = current - {old}
                options = [new for new in range(1, num_steps) if new not in current]
                keys = [tuple(sorted(rest | {new})) for new in options]
                scores = batch(keys)
                # The first improving move, as a one-at-a-time search takes it (it looked at the ones before).
                first = next((i for i, value in enumerate(scores) if value < current_score), None)
                look(keys if first is None else keys[: first + 1])
                if first is not None:
                    current, current_score, moved = set(keys[first]), scores[first], True
            if not moved:
                break
        return current

    starts = [chosen, *[set(seed) for seed in seeds]]
    finals = [improve(start) for start in starts]
    winner = min(finals, key=lambda s: (f(s), tuple(sorted(s))))
    return SearchResult(tuple(sorted(winner)), f(winner), len(looked), tuple(f(seed) for seed in seeds))
