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


def forecast_weights(make: ForecasterFactory, schedule: Iterable[int], num_steps: int) -> np.ndarray:
    """W (N x N): row s holds the weights of the recorded features in what the network or the forecast gives
    at step s (e_s on a compute step). ``make`` builds a fresh forecaster for ``num_steps`` steps."""
    compute = set(schedule)
    forecaster = make()
    eye = torch.eye(num_steps, dtype=torch.float64)
    weights = np.zeros((num_steps, num_steps))
    for step in range(num_steps):
        if step in compute or forecaster.num_recorded == 0:
            forecaster.update(step, eye[step], check_finite=False)
            weights[step, step] = 1.0
        else:
            weights[step] = forecaster.predict(step).double().numpy()
    return weights


@dataclass(frozen=True)
class ScheduleScorer:
    """The score of a schedule on some recorded trajectories (lower is better); see the module docstring.

    Args:
        make: a fresh forecaster of the config being planned (its kind, degree, lambda, w, history).
        trajectories: the recorded trajectories, all of ``num_steps`` steps.
        step_sizes: d_s, each step's weight in the final state (sigma_s - sigma_{s+1}); None: all equal.
        incoherent: the share of the per-step error term in the score, in [0, 1].
        weights_cache: forecast weights by schedule, shared by scorers of the same forecaster (they cost
            more than the score itself).
    """

    make: ForecasterFactory
    trajectories: Sequence[RecordedTrajectory]
    num_steps: int
    step_sizes: Sequence[float] | None = None
    incoherent: float = 0.0
    weights_cache: dict[tuple[int, ...], np.ndarray] = field(default_factory=dict, compare=False, repr=False)

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
        key = tuple(sorted(schedule))
        if key not in self.weights_cache:
            self.weights_cache[key] = forecast_weights(self.make, key, self.num_steps)
        residual = self.weights_cache[key] - np.eye(self.num_steps)
        d = np.ones(self.num_steps) if self.step_sizes is None else np.abs(np.asarray(self.step_sizes, float))
        u = residual.T @ d
        total = 0.0
        for t in self.trajectories:
            g = t.gram
            score = (1 - self.incoherent) * (u @ g @ u) / max(d @ g @ d, 1e-300)
            if self.incoherent:
                per_step = np.einsum("ij,jk,ik->i", residual, g, residual)
                score += self.incoherent * float(d**2 @ per_step) / max(float(d**2 @ np.diag(g)), 1e-300)
            total += t.weight * score
        return float(total)


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
