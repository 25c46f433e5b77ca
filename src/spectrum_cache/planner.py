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
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from .forecast import FeatureForecaster

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
        if self.weights_cache is None:  # frozen: set once, on first use
            object.__setattr__(self, "weights_cache", ForecastCache(self.make, self.num_steps))
        residual = forecast_weights(self.make, schedule, self.num_steps, self.weights_cache) - np.eye(self.num_steps)
        d = np.ones(self.num_steps) if self.step_sizes is None else np.abs(np.asarray(self.step_sizes, float))
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
            coherent = sum(t.weight * t.gram / max(float(d @ t.gram @ d), 1e-300) for t in self.trajectories)
            incoherent = sum(t.weight * t.gram / max(float(d**2 @ np.diag(t.gram)), 1e-300) for t in self.trajectories)
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
    another size is refused). Deterministic; ties go to the earlier steps."""
    check_budget(num_steps, passes)
    for seed in seeds:
        if len(set(seed)) != passes or 0 not in seed or not all(0 <= s < num_steps for s in seed):
            raise ValueError(f"a seed schedule must hold {passes} distinct steps in [0, {num_steps}) with step 0, "
                             f"got {sorted(seed)}.")
    cache: dict[tuple[int, ...], float] = {}

    def f(schedule: Iterable[int]) -> float:
        key = tuple(sorted(schedule))
        if key not in cache:
            cache[key] = score(key)
            if progress is not None:
                progress()
        return cache[key]

    chosen = {0}
    while len(chosen) < passes:
        best = min((s for s in range(num_steps) if s not in chosen), key=lambda s: (f(chosen | {s}), s))
        chosen.add(best)

    def improve(start: set[int]) -> set[int]:
        current, current_score = set(start), f(start)
        for _ in range(max_sweeps):
            moved = False
            for old in sorted(current - {0}):
                for new in range(1, num_steps):
                    if new in current:
                        continue
                    candidate = (current - {old}) | {new}
                    candidate_score = f(candidate)
                    if candidate_score < current_score:
                        current, current_score, moved = candidate, candidate_score, True
                        break
            if not moved:
                break
        return current

    starts = [chosen, *[set(seed) for seed in seeds]]
    finals = [improve(start) for start in starts]
    winner = min(finals, key=lambda s: (f(s), tuple(sorted(s))))
    return SearchResult(tuple(sorted(winner)), f(winner), len(cache), tuple(f(seed) for seed in seeds))
