"""Planning a pipeline call's passes over every trajectory it runs: one per denoiser (Wan2.2's two experts),
each over the steps that denoiser runs (its own numbering from 0, as generation numbers them).

``calibrate`` records the features; this module turns them into ``Expert`` records (what the planner needs of
each denoiser), searches each expert's schedule at every budget it could get (``planner.search_schedule``),
and splits the passes between experts where the sum of their weighted scores is lowest.

The experts' scores are combined with weights proportional to how much of the final state each one moves
(its recorded sum of d^T G d: the step sizes times the features it outputs): the planner's score of one
expert is its error relative to its own share of the run, so an expert that moves the latent more weighs more.
Errors of the two experts are treated as independent (their squared sizes add); the end-to-end check in
``calibrate`` judges the real outputs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..planner import ForecastCache, RecordedTrajectory, ScheduleScorer, SearchResult, search_schedule

# A schedule without a step that must compute scores this much worse per missing step: more than any real
# score, so the search adds those steps first and never moves them away.
MISSING_STEP_PENALTY = 1e30

# (denoiser name, its schedule) for each expert, in the pipeline's order: one candidate of a whole call.
Plan = tuple[tuple[str, tuple[int, ...]], ...]


@dataclass(frozen=True)
class Expert:
    """What the planner needs of one denoiser's part of a pipeline call.

    ``num_steps``: the steps it runs (its schedule is in 0 .. num_steps - 1). ``call_steps``: the first and last
    step of the pipeline call those are (None where the loop does not say). ``trajectories``: its recorded
    trajectories that span all its steps, scored. ``forced``: steps that must compute because a trajectory of
    it starts there with nothing to forecast from (step 0; and step 1 where a sampler calls the denoiser a
    second time per step from step 1 on: Heun, KDPM2, DPM-SDE, PNDM's repeated PLMS step). ``energy``: its
    share of the final state's change (the sum of d^T G d over its trajectories)."""

    name: str
    num_steps: int
    call_steps: tuple[int, int] | None
    trajectories: tuple[RecordedTrajectory, ...]
    step_sizes: list[float] | None
    time_points: list[float] | None
    forced: frozenset[int]
    energy: float

    @property
    def fewest_passes(self) -> int:
        return len(self.forced | {0})


def make_expert(name: str, num_steps: int, call_steps: tuple[int, int] | None,
                features: Mapping[str, Mapping[int, Any]], step_sizes: list[float] | None,
                time_points: list[float] | None) -> Expert:
    """An ``Expert`` from its recorded features by trajectory label (prompt and branch, each step's feature).

    A trajectory must hold consecutive steps (the every-step recording computes each step it reaches); one that
    spans all ``num_steps`` is scored, a shorter one (the second call of an order-2 step, from step 1; the
    Runge-Kutta calls of PNDM's first 3 steps) follows the same schedule and only fixes its first step."""
    import torch

    scored: list[RecordedTrajectory] = []
    forced = {0}
    for label, by_step in features.items():
        steps = sorted(by_step)
        if steps != list(range(steps[0], steps[-1] + 1)) or steps[-1] >= num_steps:
            raise ValueError(f"{name}/{label} recorded steps {steps} of its {num_steps}: calibrate plans trajectories "
                             "of consecutive steps, and this one skips some (a loop that calls the denoiser on some "
                             "steps only is not supported).")
        sizes = sorted({tuple(by_step[s].shape) for s in steps})
        if len(sizes) > 1:
            raise ValueError(f"{name}/{label}: the feature changes size within the run ({len(sizes)} sizes, e.g. "
                             f"Qwen-Image 2.1's KV-cache prefill step sees more tokens than the rest), and calibrate "
                             "plans one trajectory of one size per branch; use the paper's schedule "
                             "(SpectrumConfig(flex_window=...)) for this pipeline.")
        forced.add(steps[0])
        if steps == list(range(num_steps)):
            scored.append(RecordedTrajectory.from_features(torch.stack([by_step[s] for s in steps])))
    if not scored:
        raise ValueError(f"{name} recorded no trajectory over all its {num_steps} steps: nothing to plan from.")
    d = np.ones(num_steps) if step_sizes is None else np.abs(np.asarray(step_sizes, float))
    energy = float(sum(d @ t.gram @ d for t in scored))
    return Expert(name, num_steps, call_steps, tuple(scored), step_sizes, time_points, frozenset(forced), energy)


def check_passes(experts: Sequence[Expert], passes: int) -> None:
    """A ValueError naming ``passes`` where no schedule of the experts runs exactly that many."""
    low = sum(e.fewest_passes for e in experts)
    high = sum(e.num_steps for e in experts)
    if low <= passes <= high:
        return
    parts = ", ".join(f"{e.name} runs {e.num_steps} steps" + (f" (steps {e.call_steps[0]} to {e.call_steps[1]} of "
                                                                "the call)" if e.call_steps else "")
                      + f" and computes at least {e.fewest_passes}" for e in experts)
    raise ValueError(f"passes must be an integer in [{low}, {high}] for this pipeline call, got {passes}: {parts} "
                     "(a denoiser's first step, and the first of every trajectory it runs, has nothing to forecast "
                     "from).")


class _WithForced:
    """A schedule score that puts ``forced`` steps in every schedule it prefers (see MISSING_STEP_PENALTY);
    scores batches where the scorer does."""

    def __init__(self, scorer: Callable[[Iterable[int]], float], forced: frozenset[int]) -> None:
        self.scorer, self.forced = scorer, forced - {0}

    def _penalty(self, schedule: Iterable[int]) -> float:
        return MISSING_STEP_PENALTY * len(self.forced - set(schedule))

    def __call__(self, schedule: Iterable[int]) -> float:
        schedule = tuple(schedule)
        return self.scorer(schedule) + self._penalty(schedule)

    def score_many(self, schedules: Sequence[Iterable[int]]) -> np.ndarray:
        schedules = [tuple(s) for s in schedules]
        many = getattr(self.scorer, "score_many", None)
        scores = np.asarray(many(schedules) if many is not None else [self.scorer(s) for s in schedules], float)
        return scores + np.array([self._penalty(s) for s in schedules])


def budgets(experts: Sequence[Expert], passes: int) -> list[range]:
    """The passes each expert could get when the experts share ``passes`` exactly."""
    low = [e.fewest_passes for e in experts]
    high = [e.num_steps for e in experts]
    return [range(max(low[i], passes - (sum(high) - high[i])), min(high[i], passes - (sum(low) - low[i])) + 1)
            for i in range(len(experts))]


def search_expert(expert: Expert, make: Callable[[], Any], incoherent: float, budget: int,
                  seeds: Sequence[Sequence[int]], cache: ForecastCache | None = None,
                  progress: Callable[[], None] | None = None) -> SearchResult:
    """The schedule of ``budget`` steps of ``expert`` with the lowest score (its forced steps among them)."""
    scorer = ScheduleScorer(make, expert.trajectories, expert.num_steps, expert.step_sizes, incoherent,
                            weights_cache=cache)
    usable = [seed for seed in seeds if expert.forced <= set(seed)]
    return search_schedule(_WithForced(scorer, expert.forced), expert.num_steps, budget, seeds=usable,
                           progress=progress)


def best_split(experts: Sequence[Expert], results: Sequence[Mapping[int, SearchResult]],
               passes: int) -> tuple[float, tuple[int, ...]]:
    """The budgets (one per expert, summing to ``passes``) whose energy-weighted scores sum lowest, and that sum.
    Dynamic programming over the experts; ties go to the split that gives earlier experts fewer passes."""
    total = sum(e.energy for e in experts)
    shares = [e.energy / total for e in experts] if total > 0 else [1 / len(experts)] * len(experts)
    best: dict[int, tuple[float, tuple[int, ...]]] = {0: (0.0, ())}
    for share, by_budget in zip(shares, results):
        after: dict[int, tuple[float, tuple[int, ...]]] = {}
        for used, (score, split) in best.items():
            for budget, result in sorted(by_budget.items()):
                if used + budget > passes:
                    continue
                entry = (score + share * result.score, (*split, budget))
                if used + budget not in after or entry < after[used + budget]:
                    after[used + budget] = entry
        best = after
    return best[passes]


def proportional_splits(experts: Sequence[Expert], passes: int) -> list[tuple[int, ...]]:
    """Every split of ``passes`` the experts can take, nearest first to passes in proportion to their steps."""
    ranges = budgets(experts, passes)
    total_steps = sum(e.num_steps for e in experts)
    ideal = [passes * e.num_steps / total_steps for e in experts]
    splits: list[tuple[int, ...]] = [()]
    for allowed in ranges:
        splits = [(*s, b) for s in splits for b in allowed]
    splits = [s for s in splits if sum(s) == passes]
    return sorted(splits, key=lambda s: (sum(abs(b - i) for b, i in zip(s, ideal)), s))
