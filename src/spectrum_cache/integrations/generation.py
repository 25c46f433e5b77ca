"""The state of one generation: where each denoiser call sits in it, and the forecasters it fills.

A ``Generation`` belongs to one pipeline call (one thread's run of a denoiser); ``Generations``
(lifecycle.py) starts and ends them. Three clocks place a call:

- ``SchedulerClock`` (a pipeline, or a bare denoiser given ``scheduler=``): the step count comes from
  the scheduler's timesteps, read once when the generation starts; the current step from the
  scheduler's ``step_index``, not from the timestep's value (reading it would be a host-device sync
  per call, and rounding can repeat a value, as DPM++ Karras does at 60 steps). Schedulers of order 2 (Heun,
  KDPM2, KDPM2 ancestral, DPM-SDE, FlowMatchHeun) list 2N - 1 timesteps for N steps (t0, then two per later
  step: Heun repeats the value, KDPM2 and DPM-SDE put an interpolated one first); each pair of positions is one step. Schedulers without ``step_index`` (DDIM, DDPM, PNDM)
  are placed by matching the call's timestep value against their timesteps.
- ``FieldClock`` (the loop passes ``CacheContext(step_index=..., num_inference_steps=...)``): the
  loop's own word.
- ``BareClock`` (a bare denoiser with ``SpectrumConfig(num_inference_steps=N)``): steps are the
  distinct timestep values seen; a new generation starts when the first timestep comes back or the
  timesteps turn around. A loop that runs past N gets a warning and the network on every extra step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import torch
from torch.utils._pytree import tree_leaves

from ..config import SpectrumConfig
from ..forecast import FeatureForecaster, PairBranch
from ..schedule import compute_steps
from .adapters import GuidanceLayout, TimestepRange, guidance_layout
from .summary import BranchSummary

if TYPE_CHECKING:
    from .steps import StepSource


class Unplaced(Exception):
    """A call that cannot be placed in the generation; the network runs. ``kind`` keys the warning."""

    def __init__(self, kind: str, message: str | None) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


@dataclass
class Trajectory:
    """One feature trajectory: a branch's k-th denoiser call in each step (k > 0 for samplers that
    call the denoiser more than once per step, like Heun), for one set of input shapes."""

    forecaster: FeatureForecaster
    input_key: tuple
    first_step: int
    computed: list[int] = field(default_factory=list)
    forecast: list[int] = field(default_factory=list)
    peak_bytes: int = 0
    output_layout: Any = None  # forecast_output mode: how to rebuild the denoiser's output
    head_layout: tuple | None = None  # which heads' inputs the feature joins, and their shapes (hooks.join_heads)
    # Accelerator features only: whether every feature recorded so far was finite, as a device tensor
    # (checked once, when the trajectory ends, instead of a host-device sync per call).
    finite: torch.Tensor | None = None
    held_exactly: torch.Tensor | None = None  # the same for the forecaster's narrower held dtype (chebyshev)
    # The stand-ins' outputs of the last compute step, by stand-in index (skipping.py), in call order: their blanks.
    stand_in_outputs: list[list[Any]] | None = None
    stand_in_bytes: int = 0  # the most tensor bytes those held (0: a blank holds a layout, no tensor)
    # Shadow error: on compute steps after the first forecast, ||forecast - feature|| / ||feature|| of the
    # forecast that step would have had, as device scalars (read once, in the summary: no sync per call).
    shadow: list[tuple[int, torch.Tensor]] = field(default_factory=list)

    def note_shadow(self, step: int, forecast: torch.Tensor, feature: torch.Tensor) -> None:
        """Keep the relative error of ``forecast`` against the feature the network made at ``step``."""
        error = torch.linalg.vector_norm((forecast - feature).float())
        self.shadow.append((step, error / torch.linalg.vector_norm(feature.float()).clamp_min(1e-30)))

    def keep_stand_in_outputs(self, outputs: list[list[Any]]) -> None:
        self.stand_in_outputs = outputs
        held = sum(_tensor_bytes(o) for kept in outputs for o in kept)
        self.stand_in_bytes = max(self.stand_in_bytes, held)

    def note_finite(self, feature: torch.Tensor) -> None:
        """Fold ``feature``'s finiteness into ``finite`` without waiting for the device."""
        ok = torch.isfinite(feature).all()
        self.finite = ok if self.finite is None else torch.logical_and(self.finite, ok)


@dataclass
class BranchState:
    """The step clock and trajectories of one CFG branch in a generation."""

    step: int = -1
    calls_in_step: int = 0
    trajectories: dict[int, Trajectory] = field(default_factory=dict)
    # Trajectories replaced mid-generation by new input shapes (Z-Image's cfg_truncation drops the
    # uncond half of a batched call): kept for the summary.
    retired: list[tuple[int, Trajectory]] = field(default_factory=list)


class Generation:
    """One generation of one denoiser: its step count, schedule and per-branch trajectories.
    ``source`` is what placed it (steps.StepSource), kept to start the next one alike."""

    def __init__(self, config: SpectrumConfig, denoiser: str, clock: Clock, source: StepSource,
                 held_dtype: torch.dtype | None = None) -> None:
        self.config = config
        self.held_dtype = held_dtype  # the forecasters hold features in it where that is exact
        self.source = source
        self.denoiser = denoiser
        self.clock = clock
        self.pipeline = source.pipeline  # the pipeline object whose call this is (None for a bare loop)
        self.uses_cfg = source.uses_cfg  # the pipeline call's own CFG decision, None if unknown
        self.by_fields = False  # placed by CacheContext step fields
        self.layout: GuidanceLayout | None = guidance_layout(self.pipeline) if self.pipeline is not None else None
        self.branches: dict[str, BranchState] = {}
        # Paired forecasting's pairs (planning.forecaster_for): per key, the pair's two views and which have a
        # trajectory.
        self.pairs: dict[object, tuple[tuple[PairBranch, PairBranch], list[bool]]] = {}
        self.compute_steps = (frozenset(compute_steps(config, clock.num_steps, denoiser=denoiser)) if clock.num_steps
                              else frozenset())
        # The forecasts' time axis; a note says why a sigma axis was asked for and cannot be had.
        self.time_points: list[float] | None = None
        self.time_axis_note: str | None = None
        if config.time_axis == "sigma" and clock.num_steps:
            self.time_points, self.time_axis_note = clock.sigma_positions()

    @property
    def num_steps(self) -> int | None:
        return self.clock.num_steps

    def reached_end(self) -> bool:
        """Whether a call of this generation was placed on its last step."""
        return self.num_steps is not None and any(b.step == self.num_steps - 1 for b in self.branches.values())

    def branch(self, name: str) -> BranchState:
        return self.branches.setdefault(name, BranchState())

    def trajectories(self) -> list[Trajectory]:
        """Every trajectory of the generation, those replaced by new input shapes included."""
        return [t for b in self.branches.values() for t in [*b.trajectories.values(), *(t for _, t in b.retired)]]

    def device_problems(self) -> list[tuple[str, str]]:
        """(kind, message) for what the device flags of the trajectories say went wrong: read when the
        generation ends, after its last denoiser call (one host-device transfer for all of them)."""
        flags = [(kind, flag) for t in self.trajectories()
                 for kind, flag in (("nonfinite", t.finite), ("held", t.held_exactly)) if flag is not None]
        if not flags:
            return []
        if len({flag.device for _, flag in flags}) == 1:
            values = torch.stack([flag for _, flag in flags]).tolist()
        else:  # experts on several devices: one read each
            values = [bool(flag) for _, flag in flags]
        failed = {kind for (kind, _), ok in zip(flags, values) if not ok}
        messages = {
            "nonfinite": "the network produced NaN or Inf features in this generation, and the forecasts made from "
                         "them are not finite either.",
            "held": "the recorded features were not exact in the model's dtype, which the adapter table says they "
                    "are (head_input_upcast): the forecasts were made from rounded features.",
        }
        return [(kind, message) for kind, message in messages.items() if kind in failed]

    def close(self) -> None:
        """Free every forecaster's tensors; the summary stays."""
        for trajectory in self.trajectories():
            trajectory.forecaster.reset()

    def summaries(self) -> list[BranchSummary]:
        out = []
        for name, branch in self.branches.items():
            rows = [*branch.retired, *sorted(branch.trajectories.items())]
            for slot, trajectory in sorted(rows, key=lambda row: (row[0], row[1].first_step)):
                label = name if slot == 0 else f"{name}[{slot}]"
                if trajectory.first_step > 0 and any(s == slot and t is not trajectory for s, t in rows):
                    label += f" from step {trajectory.first_step}"  # restarted on new input shapes
                out.append(
                    BranchSummary(
                        denoiser=self.denoiser,
                        branch=label,
                        num_inference_steps=self.num_steps,
                        computed_steps=tuple(trajectory.computed),
                        forecast_steps=tuple(trajectory.forecast),
                        peak_bytes=trajectory.peak_bytes,
                        stand_in_bytes=trajectory.stand_in_bytes,
                        shadow_errors=tuple((step, float(error)) for step, error in trajectory.shadow),
                    )
                )
        return out


def _count(step_of_index: list[int | None]) -> int | None:
    """How many steps ``step_of_index`` places calls on; None for none."""
    last = max((step for step in step_of_index if step is not None), default=None)
    return None if last is None else last + 1


class Clock(Protocol):
    """Places a generation's calls on its steps: one protocol for the three ways a loop says where it is."""

    @property
    def num_steps(self) -> int | None:
        """The steps this denoiser runs in the generation; None where it runs none."""

    @property
    def token(self) -> Any:
        """What a finished generation leaves behind (a scheduler's timesteps), or None."""

    def place(self, branch: str, timestep: Any, loop_index: int | None) -> int | None:
        """The step of a call of ``branch`` (``loop_index``: the loop's own count, CacheContext.step_index);
        None where the timesteps started over (a new generation). Raises Unplaced where it cannot tell."""

    def still_running(self) -> bool:
        """Whether a call without step fields may go on in this clock's generation."""

    def continues(self, step: int, loop_index: int, total: int) -> bool:
        """Whether loop index ``loop_index`` of ``total`` continues a branch that is at ``step``."""

    def loop_step(self) -> int | None:
        """The loop's current step from the start of its call (a guider's step), where the clock knows it."""

    def sigma_positions(self) -> tuple[list[float] | None, str | None]:
        """Each step's noise level mapped onto [0, N - 1], or (None, why not)."""

    def call_range(self) -> tuple[int, int] | None:
        """The first and last step of the pipeline call that this denoiser runs, where the loop says."""

    def step_levels(self) -> list[float] | None:
        """Each step's noise level and the one after the last step (N + 1 values), where known."""


class SchedulerClock:
    """Places calls by a scheduler's ``step_index`` (see the module docstring)."""

    def __init__(self, scheduler: Any, steps_run: TimestepRange, begin: int | None = None) -> None:
        self.scheduler = scheduler
        self.token = scheduler.timesteps  # a new tensor after every set_timesteps: a new generation
        # One host-device sync per generation, not per call.
        timesteps = torch.as_tensor(scheduler.timesteps).detach().float().cpu().tolist()
        # ``begin``: where the pipeline's loop starts, for a scheduler that does not say (steps.loop_begin).
        self.begin = getattr(scheduler, "begin_index", None) or begin or 0
        self.by_index = hasattr(type(scheduler), "step_index")
        # An order-2 scheduler lists 2N - 1 timesteps for N steps: t0, then two per later step. Heun repeats
        # each value, but KDPM2, KDPM2 ancestral and DPM-SDE put an interpolated timestep between, so the
        # pairs go by position (index begin + 2k - 1 and begin + 2k are step k), not by equal values.
        self.timesteps = timesteps
        # PNDM with its Runge-Kutta warm-up (skip_prk_steps=False, diffusers' default) evaluates each of its
        # first 3 steps 4 times (t, t - h/2 twice, t - h), the last value repeating as the next step's first:
        # those calls are placed by the scheduler's own count of calls (``counter``), not by value.
        prk = getattr(scheduler, "prk_timesteps", None) if not self.by_index else None
        counts_calls = isinstance(getattr(scheduler, "counter", None), int)
        self.runge_kutta_calls = len(prk) if prk is not None and counts_calls else 0
        # step_of_index[i]: the step that index i of scheduler.timesteps belongs to, or None where this
        # denoiser does not run (before begin_index, or outside steps_run).
        self.step_of_index = self._steps(self.begin, steps_run)
        self.num_steps = _count(self.step_of_index)
        # The same for the whole pipeline call (every denoiser, from its first timestep): the steps the user asked for.
        self.call_step_of_index = self._steps(0, TimestepRange())
        self.call_num_steps = _count(self.call_step_of_index)
        self._last_index: dict[str, int] = {}

    def _steps(self, begin: int, steps_run: TimestepRange) -> list[int | None]:
        """Which step each index of the timesteps from ``begin`` on belongs to (None outside ``steps_run``)."""
        timesteps = self.timesteps
        in_pairs = self.by_index and getattr(self.scheduler, "order", 1) > 1
        # PNDM's PLMS warm-up (without Runge-Kutta) evaluates its second timestep twice.
        group_repeats = not self.by_index and not self.runge_kutta_calls
        step_of_index: list[int | None] = [None] * len(timesteps)
        step = -1
        for i in range(begin, len(timesteps)):
            if timesteps[i] not in steps_run:
                continue
            if i < self.runge_kutta_calls:
                starts = i % 4 == 0
            elif in_pairs:
                starts = (i - begin) % 2 == 1
            else:
                starts = not (group_repeats and i > begin and timesteps[i] == timesteps[i - 1])
            if starts or step < 0:  # the first index this denoiser runs always starts a step
                step += 1
            step_of_index[i] = step
        return step_of_index

    def _first_index_of_steps(self) -> dict[int, int]:
        firsts: dict[int, int] = {}
        for index, step in enumerate(self.step_of_index):
            if step is not None and step not in firsts:
                firsts[step] = index
        return firsts

    def sigma_positions(self) -> tuple[list[float] | None, str | None]:
        """Each step's noise level (the scheduler's ``sigmas``, else its timesteps, at the step's first
        index) mapped linearly onto [0, N - 1]: the first step at 0, the last at N - 1. Returns
        (positions, None), or (None, why not) where the noise level does not fall strictly from step
        to step."""
        sigmas = getattr(self.scheduler, "sigmas", None)
        if sigmas is not None and len(sigmas) >= len(self.timesteps):
            values = torch.as_tensor(sigmas).detach().float().cpu().tolist()  # once per generation
            source = "sigmas"
        else:
            values, source = self.timesteps, "timesteps"
        first = self._first_index_of_steps()
        levels = [values[first[s]] for s in range(self.num_steps or 0)]
        if len(levels) == 1:
            return [0.0], None
        span = levels[0] - levels[-1]
        if not all(a > b for a, b in zip(levels, levels[1:])) or span <= 0:
            return None, (f"time_axis='sigma': the scheduler's {source} do not fall strictly from step to step, "
                          "so the forecasts use the step index.")
        last = len(levels) - 1
        positions = [last * (levels[0] - v) / span for v in levels]
        positions[-1] = float(last)  # exactly, whatever the rounding
        return positions, None

    def step_levels(self) -> list[float] | None:
        sigmas = getattr(self.scheduler, "sigmas", None)
        values = torch.as_tensor(sigmas).detach().double().cpu().tolist() if sigmas is not None else None
        if values is None or len(values) < len(self.timesteps):
            values = [t / 1000 for t in self.timesteps] + [0.0]
        firsts = self._first_index_of_steps()
        if not self.num_steps or len(firsts) != self.num_steps:
            return None
        last_index = max(i for i, s in enumerate(self.step_of_index) if s is not None) + 1
        levels = [values[firsts[s]] for s in range(self.num_steps)]
        return [*levels, values[last_index] if last_index < len(values) else 0.0]

    def call_steps(self) -> list[int]:
        """The pipeline call's step numbers of the steps this denoiser runs, in order."""
        return [call for step, call in zip(self.step_of_index, self.call_step_of_index)
                if step is not None and call is not None]

    def call_range(self) -> tuple[int, int] | None:
        steps = self.call_steps()
        return (steps[0], steps[-1]) if steps else None

    def still_running(self) -> bool:
        """Whether the scheduler is still in this clock's run: the same timesteps tensor, and (for
        schedulers with a step_index) an index inside it. A run that ended leaves the index past the end."""
        if self.scheduler.timesteps is not self.token:
            return False
        if self.by_index:
            index = self.scheduler.step_index
            return index is None or index < len(self.step_of_index)
        return True

    def continues(self, step: int, loop_index: int, total: int) -> bool:
        position = self.begin + loop_index
        found = self.step_of_index[position] if 0 <= position < len(self.step_of_index) else None
        return found is None or found >= step

    def loop_step(self) -> int | None:
        if not self.by_index:
            return None
        index = self.scheduler.step_index
        return (index if index is not None else self.begin) - self.begin

    def place(self, branch: str, timestep: Any, loop_index: int | None = None) -> int:
        """The step of a call: by ``loop_index`` (the loop's own count from the first step it runs,
        CacheContext.step_index) where given, else by the scheduler's step_index or the timestep."""
        if self.num_steps is None:
            raise Unplaced("unplanned", "the pipeline runs no step on this denoiser by its scheduler's timesteps; "
                           "running the network.")
        if loop_index is not None:
            index = self.begin + loop_index
        elif self.by_index:
            index = self.scheduler.step_index
            if index is None:  # before the first scheduler.step() of the generation
                index = self.begin
        elif self.runge_kutta_calls:
            index = self.begin + self.scheduler.counter  # one scheduler.step() per call: the call's index
        else:
            index = self._match(branch, timestep)
        step = self.step_of_index[index] if 0 <= index < len(self.step_of_index) else None
        if step is None:
            raise Unplaced(
                "unplanned",
                f"a call at scheduler index {index} is outside the steps this denoiser was planned to run; "
                "running the network there.",
            )
        return step

    def _match(self, branch: str, timestep: Any) -> int:
        """The index of ``timestep`` in the scheduler's timesteps, searching on from the branch's last."""
        if timestep is None:
            raise Unplaced("timestep", "no timestep in the call; running the network.")
        t = _timestep_value(timestep)
        start = self._last_index.get(branch, self.begin)
        candidates = range(start, len(self.timesteps))
        found = next((i for i in candidates if self.timesteps[i] == t), None)
        if found is None:  # a timestep cast to half precision by the pipeline: the nearest within its rounding
            near = [i for i in candidates if abs(self.timesteps[i] - t) <= abs(t) / 128]
            found = min(near, key=lambda i: abs(self.timesteps[i] - t), default=None)
        if found is not None:
            self._last_index[branch] = found
            return found
        raise Unplaced(
            "match",
            f"timestep {t:g} is not among the scheduler's timesteps (from index {start}); running the network.",
        )


class _WithoutScheduler:
    """What a clock without a scheduler cannot know: no timesteps to spend, no loop position, no noise levels."""

    token = None

    def loop_step(self) -> int | None:
        return None

    def call_range(self) -> tuple[int, int] | None:
        return None

    def step_levels(self) -> list[float] | None:
        return None


class FieldClock(_WithoutScheduler):
    """Places calls at the step the loop gives in ``CacheContext.step_index``."""

    def __init__(self, num_steps: int) -> None:
        self.num_steps = num_steps

    def place(self, branch: str, timestep: Any, loop_index: int | None = None) -> int:
        if loop_index is None:
            raise Unplaced("fields", "the loop stopped passing cache_context step fields; running the network.")
        if not 0 <= loop_index < self.num_steps:
            raise Unplaced("past-end", f"cache_context step_index={loop_index} is outside num_inference_steps="
                           f"{self.num_steps}; running the network.")
        return loop_index

    def still_running(self) -> bool:
        return False  # a call without step fields is not of this loop

    def continues(self, step: int, loop_index: int, total: int) -> bool:
        return total == self.num_steps and loop_index >= step

    def sigma_positions(self) -> tuple[list[float] | None, str | None]:
        return None, ("time_axis='sigma' needs every step's noise level in advance, and this loop passes only "
                      "step_index and num_inference_steps, so the forecasts use the step index.")


@dataclass
class _BareBranch:
    step: int = -1
    first: float | None = None
    last: float | None = None
    direction: float = 0.0


class BareClock(_WithoutScheduler):
    """Places calls of a hand-written loop by the timestep values it passes (see the module docstring)."""

    def __init__(self, num_steps: int) -> None:
        self.num_steps = num_steps
        self._branches: dict[str, _BareBranch] = {}

    def place(self, branch: str, timestep: Any, loop_index: int | None = None) -> int | None:
        """The call's step (N or more past the end), or None when the timesteps started over."""
        if timestep is None:
            raise Unplaced("timestep", "no timestep in the call; running the network.")
        t = _timestep_value(timestep)
        state = self._branches.setdefault(branch, _BareBranch())
        if state.last is None:
            state.first = state.last = t
        elif t == state.last:
            return state.step
        else:
            moved = math.copysign(1.0, t - state.last)
            if t == state.first or (state.direction and moved != state.direction):
                return None
            state.direction, state.last = moved, t
        state.step += 1
        return state.step

    def still_running(self) -> bool:
        return True

    def continues(self, step: int, loop_index: int, total: int) -> bool:
        return True

    def sigma_positions(self) -> tuple[list[float] | None, str | None]:
        return None, ("time_axis='sigma' needs the scheduler's noise levels, and this loop runs without one "
                      "(pass scheduler= to enable_spectrum), so the forecasts use the step index.")


def _timestep_value(timestep: Any) -> float:
    # max(): Wan2.2's per-token timesteps are 0 on the conditioning frame and t elsewhere.
    return float(timestep.max()) if isinstance(timestep, torch.Tensor) else float(timestep)


def _tensor_bytes(value: Any) -> int:
    return sum(leaf.numel() * leaf.element_size() for leaf in tree_leaves(value) if isinstance(leaf, torch.Tensor))
