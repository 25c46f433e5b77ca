"""The owner of one denoiser's generations: it starts, restarts and ends them, and keeps their reports.

Each thread runs its own generation (``threading.local``: a thread that ends takes its generation
with it). ``place`` puts a call into the thread's generation and returns the generation it used:
when the call starts a new one (new timesteps, the timesteps starting over, a pipeline that finished),
that is the new one, so the caller never plans with a generation that is over. The step source is
looked for (``steps.find_source``, a walk up the caller's frames) only when a generation starts.
"""

from __future__ import annotations

import dataclasses
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from diffusers import DiffusionPipeline

from ..config import SpectrumConfig
from .adapters import TimestepRange, steps_run_by
from .contexts import StepFields
from .generation import BareClock, BranchState, FieldClock, Generation, SchedulerClock, Unplaced
from .steps import DeclaredLoop, StepSource, check_ready
from .summary import BranchSummary

# More calls than this on one step of one branch (Heun with two unnamed CFG calls makes 4) means the
# scheduler's step_index is not advancing: a hand-written loop that never calls scheduler.step().
MAX_CALLS_PER_STEP = 8


@dataclass
class Placement:
    """Where one call sits: its generation, branch (and its name), step, and which call of the step it
    is (slot)."""

    generation: Generation
    name: str
    branch: BranchState
    step: int
    slot: int


class Generations:
    """One denoiser's generations, one per thread, and the reports of those that ended."""

    def __init__(self, config: SpectrumConfig, denoiser: str, note: Callable[[str, str], None],
                 held_dtype: Callable[[], torch.dtype | None] = lambda: None) -> None:
        self.config = config
        self.denoiser = denoiser
        self._note = note  # (kind, message): a warning said once
        self._held_dtype = held_dtype  # asked at each generation's start: the model's dtype may have changed
        self._local = threading.local()
        self._reports: dict[int, tuple[weakref.ref | None, list[BranchSummary]]] = {}  # per pipeline id
        self._last_report: list[BranchSummary] = []
        self._spent: weakref.ref | None = None  # the timesteps of the last generation that ended

    # -- the thread's generation ---------------------------------------------------------------
    def current(self) -> Generation | None:
        return getattr(self._local, "generation", None)

    @property
    def declared(self) -> DeclaredLoop | None:
        """What a hand-written loop in this thread said it runs (``denoising_loop``)."""
        return getattr(self._local, "declared", None)

    def declare(self, loop: DeclaredLoop | None) -> None:
        self.end()
        self._local.declared = loop

    def place(self, name_of: Callable[[Generation | None], str], timestep: Any, fields: StepFields | None,
              discover: Callable[[], StepSource]) -> Placement:
        """Place a call whose branch is ``name_of(generation)`` (a modular pipeline's guider, which names
        branches, comes with the generation); raises Unplaced where the network just runs."""
        generation = self.current()
        if fields is not None:
            return self._place_by_fields(generation, name_of, fields, discover)
        if generation is not None and not _still_running(generation):
            self.end(call_over=False)
            generation = None
        if generation is None:
            generation = self._start(discover())
        name = name_of(generation)
        branch = generation.branch(name)
        if isinstance(generation.clock, BareClock):
            step = generation.clock.place(branch, timestep)
            if step is None:  # the timesteps started over: a new generation
                generation = self._start(generation.source)
                name = name_of(generation)
                branch = generation.branch(name)
                step = generation.clock.place(branch, timestep)
        elif generation.num_steps is None:
            raise Unplaced("unplanned", "the pipeline runs no step on this denoiser by its scheduler's timesteps; "
                           "running the network.")
        else:
            step = generation.clock.place(name, timestep)
        return self._count(generation, name, branch, step)

    def _place_by_fields(self, generation: Generation | None, name_of: Callable[[Generation | None], str],
                         fields: StepFields, discover: Callable[[], StepSource]) -> Placement:
        """Place a call by the loop's ``CacheContext.step_index``. Where the call comes from a pipeline,
        its scheduler still says which steps this denoiser runs (Wan2.2's experts); elsewhere the
        fields alone give the steps."""
        n = fields.num_inference_steps
        if (generation is None or not generation.by_fields or not _in_its_call(generation)
                or (isinstance(generation.clock, FieldClock) and generation.num_steps != n)
                or not _moves_on(generation, name_of(generation), fields.step_index)):
            source = discover()
            if source.origin == "pipeline":
                generation = self._start(source)
            else:
                generation = self._begin(FieldClock(n), source)
            generation.by_fields = True
        name = name_of(generation)
        if isinstance(generation.clock, FieldClock):
            step = fields.step_index
            if not 0 <= step < n:
                raise Unplaced("past-end", f"cache_context step_index={step} is outside num_inference_steps={n}; "
                               "running the network.")
        else:
            step = generation.clock.place(name, None, loop_index=fields.step_index)
        return self._count(generation, name, generation.branch(name), step)

    def _count(self, generation: Generation, name: str, branch: BranchState, step: int) -> Placement:
        if step != branch.step:
            branch.step, branch.calls_in_step = step, 0
        slot = branch.calls_in_step
        branch.calls_in_step += 1
        if slot >= MAX_CALLS_PER_STEP:
            raise Unplaced(
                "stuck",
                f"more than {MAX_CALLS_PER_STEP} calls landed on step {step}: the scheduler's step_index does not "
                "advance (call scheduler.step() after each step); running the network.",
            )
        if step >= generation.num_steps:
            raise Unplaced(
                "past-end",
                f"the denoiser ran past SpectrumConfig.num_inference_steps={generation.num_steps} without the "
                "timesteps starting over; the network runs on every extra step. Set num_inference_steps to the "
                "loop's length.",
            )
        return Placement(generation, name, branch, step, slot)

    # -- starting and ending ---------------------------------------------------------------------
    def _start(self, source: StepSource) -> Generation:
        if source.scheduler is None:
            if source.num_steps is None:
                raise Unplaced("no-steps", "no scheduler and no num_inference_steps say how many steps this loop "
                               "runs; running the network.")
            return self._begin(BareClock(source.num_steps), source)
        scheduler = source.scheduler
        check_ready(scheduler, source.origin)
        if self._spent is not None and self._spent() is scheduler.timesteps:
            # Every pipeline call sets new timesteps: these belong to a generation that is over.
            raise Unplaced("stale", f"{type(scheduler).__name__}'s timesteps are those of a finished generation "
                           "(set_timesteps was not called for this one), so the step count is unknown; running "
                           "the network. Call the pipeline, or set_timesteps before a hand-written loop.")
        pipeline = source.pipeline
        steps_run = steps_run_by(pipeline, source.component) if pipeline is not None else TimestepRange()
        clock = SchedulerClock(scheduler, steps_run, source.begin)
        wanted = self.config.num_inference_steps
        if self.config.per_denoiser and clock.call_num_steps != wanted:
            raise ValueError(_per_denoiser_refusal(self.config, self.denoiser, clock))
        if (self.config.compute_steps is not None and not self.config.per_denoiser and clock.num_steps is not None
                and clock.num_steps != wanted and clock.num_steps != clock.call_num_steps):
            raise ValueError(_part_of_call_refusal(self.config, self.denoiser, clock, steps_run))
        # An explicit schedule refuses another step count itself (schedule.compute_steps).
        if (wanted is not None and wanted != clock.num_steps and steps_run == TimestepRange()
                and self.config.compute_steps is None):
            self._note("count", f"SpectrumConfig.num_inference_steps={wanted} but the pipeline runs "
                       f"{clock.num_steps} steps; the schedule follows the pipeline.")
        return self._begin(clock, source)

    def _begin(self, clock: SchedulerClock | BareClock | FieldClock, source: StepSource) -> Generation:
        self.end(call_over=False)
        earlier = getattr(self._local, "earlier", None)
        if earlier is not None and not (isinstance(source.pipeline, DiffusionPipeline) and earlier[0] is source.pipeline):
            self._local.earlier = None  # not another run within the same pipeline call
        generation = Generation(self.config, self.denoiser, clock, source.pipeline, source.uses_cfg, source,
                                self._held_dtype())
        self._local.generation = generation
        if generation.time_axis_note:
            self._note("time-axis", generation.time_axis_note)
        return generation

    def end(self, call_over: bool = True) -> None:
        """End this thread's generation: free its tensors, keep its report. ``call_over`` False: a new
        generation may follow within the same pipeline call (Helios denoises chunk after chunk, each with
        its own timesteps); the call's report then lists every run (``(run k)`` from the second on)."""
        generation = self.current()
        self._local.generation = None
        if generation is None:
            if call_over:
                self._local.earlier = None
            return
        generation.close()
        if isinstance(generation.clock, SchedulerClock):
            self._spent = weakref.ref(generation.clock.token)
        report = self._call_report(generation)
        if report:
            source = generation.source
            pipeline = source.report_to if source is not None and source.report_to is not None else generation.pipeline
            self._reports[id(pipeline)] = (weakref.ref(pipeline) if pipeline is not None else None, report)
            self._last_report = report
        self._reports = {k: v for k, v in self._reports.items() if v[0] is None or v[0]() is not None}
        # Only a run that got to its last step can be followed by another run of the same call; one cut short
        # (the call raised) is followed by a new call.
        earlier = getattr(self._local, "earlier", None)
        runs = earlier[2] + 1 if earlier is not None and earlier[1] else 1
        self._local.earlier = (None if call_over or not generation.reached_end()
                               else (generation.pipeline, report, runs))  # (pipeline, report so far, runs in it)

    def _call_report(self, generation: Generation) -> list[BranchSummary]:
        """The report of the pipeline call so far: earlier runs of the call, then ``generation``'s."""
        rows = generation.summaries()
        earlier = getattr(self._local, "earlier", None)
        if earlier is None or not earlier[1]:
            return rows
        run = earlier[2] + 1
        return [*earlier[1], *(dataclasses.replace(b, branch=f"{b.branch} (run {run})") for b in rows)]

    # -- reports ---------------------------------------------------------------------------------
    def summaries(self, pipeline: Any = None) -> list[BranchSummary]:
        """This thread's current generation if it belongs to ``pipeline`` (any, for None), else the
        last finished generation of ``pipeline`` (of any pipeline or loop, for None)."""
        live = self.current()
        owner = live.source.report_to if live is not None and live.source is not None else None
        if live is not None and (pipeline is None or pipeline is live.pipeline or pipeline is owner):
            report = self._call_report(live)
            if report:
                return report
        if pipeline is None:
            return self._last_report
        ref, report = self._reports.get(id(pipeline), (None, []))
        return report if ref is not None and ref() is pipeline else []


def _part_of_call_refusal(config: SpectrumConfig, denoiser: str, clock: SchedulerClock, steps_run: TimestepRange) -> str:
    """Why an explicit schedule does not fit a denoiser that runs part of its pipeline call's steps, in the
    call's own step count (schedule.compute_steps' message would give the denoiser's part as the run's)."""
    steps = [clock.call_step_of_index[i] for i, step in enumerate(clock.step_of_index) if step is not None]
    if steps_run != TimestepRange():
        why = ("the pipeline gives its other steps to another denoiser (Wan2.2's boundary_ratio) or leaves them to "
               "a refiner (denoising_end)")
    else:
        why = f"the call starts at step {steps[0]} (image-to-image strength below 1, or denoising_start)"
    return (f"this schedule (compute_steps) was planned for {config.num_inference_steps} steps, and this pipeline "
            f"call has {clock.call_num_steps} steps, of which {denoiser} runs {clock.num_steps} (steps {steps[0]} to "
            f"{steps[-1]}): {why}. A schedule is for the steps a denoiser runs: plan it for {clock.num_steps} "
            "steps (a denoiser that runs another count needs its own), or enable Spectrum without compute_steps (the "
            "adaptive schedule fits each denoiser's steps).")


def _per_denoiser_refusal(config: SpectrumConfig, denoiser: str, clock: SchedulerClock) -> str:
    """Why per-denoiser schedules do not fit a pipeline call of another step count."""
    steps = config.denoiser_steps
    split = f" ({', '.join(f'{name} {count}' for name, count in steps.items())})" if steps is not None else ""
    return (f"these schedules (compute_steps per denoiser) were planned for pipeline calls of "
            f"{config.num_inference_steps} steps{split}, and this call has {clock.call_num_steps} steps, of which "
            f"{denoiser} runs {clock.num_steps}: call the pipeline with num_inference_steps="
            f"{config.num_inference_steps}, or calibrate again for {clock.call_num_steps}.")


def _moves_on(generation: Generation, name: str, index: int) -> bool:
    """Whether loop index ``index`` continues ``generation`` for branch ``name`` (it does not go back)."""
    branch = generation.branches.get(name)
    if branch is None or branch.step < 0:
        return True
    clock = generation.clock
    if isinstance(clock, FieldClock):
        return index >= branch.step
    position = clock.begin + index
    step = clock.step_of_index[position] if 0 <= position < len(clock.step_of_index) else None
    return step is None or step >= branch.step


def _in_its_call(generation: Generation) -> bool:
    """Whether the pipeline call that started ``generation`` (if one did) is still running: one that
    ended early leaves its generation open, and the next pipeline on this denoiser must not go on in it."""
    call = generation.source.call if generation.source is not None else None
    return call is None or call.running()


def _still_running(generation: Generation) -> bool:
    """Whether the next call without step fields may go on in ``generation``."""
    if not _in_its_call(generation):
        return False
    clock = generation.clock
    if isinstance(clock, SchedulerClock):
        return clock.still_running()
    return not isinstance(clock, FieldClock)
