"""The owner of one denoiser's generations: it starts, restarts and ends them, and keeps their reports.

Each thread runs its own generation (``threading.local``: a thread that ends takes its generation
with it). A generation ends when its pipeline call ends (diffusers' ``maybe_free_model_hooks`` resets the
denoiser's hooks: ``end``), when the thread begins another scheduler run (a watched ``set_timesteps``:
``new_run``), when its scheduler's timesteps are replaced or run out, or when a call inside it raises.

A call is put into the thread's generation in two steps, so that the hook names the call's branch in
between, from the generation it will be placed in: ``ongoing`` gives that generation (starting one
where there is none or the last one is over, from the step source of ``steps.find_source``), and
``place`` places the named call in it. ``Generations`` also holds what Spectrum was enabled through:
the pipelines (several, where ``enable_spectrum`` was called on ``from_pipe`` siblings), or the
scheduler given for a bare denoiser.
"""

from __future__ import annotations

import dataclasses
import itertools
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from diffusers import DiffusionPipeline

from ..config import SpectrumConfig
from . import runs
from .adapters import TimestepRange, steps_run_by
from .contexts import StepFields
from .generation import BareClock, BranchState, Clock, FieldClock, Generation, SchedulerClock, Unplaced
from .steps import DeclaredLoop, Event, StepSource, check_ready, find_source, scheduler_of
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


@dataclass
class _Earlier:
    """The runs of the current pipeline call that ended (Helios denoises chunk after chunk)."""

    pipeline: Any
    report: list[BranchSummary]
    runs: int


class Generations:
    """One denoiser's generations, one per thread, and the reports of those that ended."""

    def __init__(self, config: SpectrumConfig, denoiser: torch.nn.Module | None, name: str,
                 note: Callable[[str, str], None], lock: threading.RLock,
                 held_dtype: Callable[[], torch.dtype | None] = lambda: None, scheduler: Any = None) -> None:
        self.config = config
        self.module = denoiser
        self.denoiser = name
        self._note = note  # (kind, message): a warning said once
        self._lock = lock  # the hook's: a watched set_timesteps may come from any thread
        self._held_dtype = held_dtype  # asked at each generation's start: the model's dtype may have changed
        self._local = threading.local()
        self._order = itertools.count()
        self._pipelines: list[weakref.ref] = []  # what Spectrum was enabled through, the first first
        self._scheduler = scheduler  # a bare denoiser's (enable_spectrum(model, scheduler=...))
        self._watched: list[weakref.ref] = []
        self._reports: dict[int, tuple[weakref.ref | None, list[BranchSummary]]] = {}  # per pipeline id
        self._last_report: list[BranchSummary] = []
        self._spent: weakref.ref | None = None  # the timesteps of the last generation that ended
        if scheduler is not None:
            self._watch(scheduler)

    # -- what Spectrum was enabled through ------------------------------------------------------
    def add_pipeline(self, pipeline: Any) -> None:
        """Place calls of ``pipeline`` (the enabling one, or a ``from_pipe`` sibling enabled after it)."""
        if not self.knows(pipeline):
            self._pipelines.append(weakref.ref(pipeline))
        scheduler = scheduler_of(pipeline)
        if scheduler is not None:
            self._watch(scheduler)

    def knows(self, pipeline: Any) -> bool:
        return any(ref() is pipeline for ref in self._pipelines)

    def _watch(self, scheduler: Any) -> None:
        if not runs.watched(scheduler, id(self)):
            runs.watch(scheduler, id(self), self.new_run)
            self._watched.append(weakref.ref(scheduler))

    def unwatch_all(self) -> None:
        """Leave every scheduler as it was (disable_spectrum)."""
        for ref in self._watched:
            scheduler = ref()
            if scheduler is not None:
                runs.unwatch(scheduler, id(self))
        self._watched = []

    def new_run(self, scheduler: Any) -> None:
        """This thread called ``scheduler.set_timesteps``: its generation is over; the next call starts the next."""
        with self._lock:
            self._local.run = Event(next(self._order), scheduler=scheduler)
            if self.current() is not None:
                self.end(call_over=False)

    def _find_source(self) -> StepSource:
        assert self.module is not None  # set when the hook is registered on it
        pipelines = [p for ref in self._pipelines if (p := ref()) is not None]
        for pipeline in pipelines:  # a scheduler swapped in since: its next run is seen
            scheduler = scheduler_of(pipeline)
            if scheduler is not None:
                self._watch(scheduler)
        return find_source(self.module, getattr(self._local, "run", None), getattr(self._local, "declared", None),
                           pipelines, len(pipelines) < len(self._pipelines), self._scheduler,
                           self.config.num_inference_steps)

    # -- the thread's generation ---------------------------------------------------------------
    def current(self) -> Generation | None:
        return getattr(self._local, "generation", None)

    def declare(self, loop: DeclaredLoop | None) -> None:
        """What a hand-written loop in this thread says it runs (``denoising_loop``), or None at its end."""
        self.end()
        self._local.declared = Event(next(self._order), loop=loop) if loop is not None else None
        if loop is not None and loop.scheduler is not None:
            self._watch(loop.scheduler)

    def ongoing(self, fields: StepFields | None, context_name: str) -> Generation:
        """The generation this thread's call goes into: the current one, or a new one where there is none or
        it is over. Raises Unplaced where the network just runs."""
        generation = self.current()
        if fields is not None:
            n = fields.num_inference_steps
            if (generation is None or not generation.by_fields
                    or not _continues(generation, context_name, fields)):
                source = self._find_source()
                generation = self._start(source) if source.origin == "pipeline" else self._begin(FieldClock(n), source)
                generation.by_fields = True
            return generation
        if generation is not None and not generation.clock.still_running():
            self.end(call_over=False)
            generation = None
        return generation if generation is not None else self._start(self._find_source())

    def place(self, generation: Generation, name: str, timestep: Any, fields: StepFields | None) -> Placement:
        """Place the call of branch ``name`` in ``generation`` (or, where its timesteps started over, in the
        generation that follows it); raises Unplaced where the network just runs."""
        step = generation.clock.place(name, timestep, fields.step_index if fields is not None else None)
        if step is None:  # the timesteps started over: a new generation
            generation = self._start(generation.source)
            step = generation.clock.place(name, timestep, None)
            if step is None:  # pragma: no cover - a new clock's first call is its step 0
                raise Unplaced("restart", None)
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
        if generation.num_steps is None or step >= generation.num_steps:
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
                           "the network. Call the pipeline, or set_timesteps before a hand-written loop. A "
                           "from_pipe sibling with a scheduler of its own is placed once Spectrum is enabled on it "
                           "too: enable_spectrum(sibling).")
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

    def _begin(self, clock: Clock, source: StepSource) -> Generation:
        self.end(call_over=False)
        earlier = getattr(self._local, "earlier", None)
        if earlier is not None and not (isinstance(source.pipeline, DiffusionPipeline) and earlier.pipeline is source.pipeline):
            self._local.earlier = None  # not another run within the same pipeline call
        generation = Generation(self.config, self.denoiser, clock, source, self._held_dtype())
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
        for kind, message in generation.device_problems():
            self._note(kind, message)
        generation.close()
        if generation.clock.token is not None:
            self._spent = weakref.ref(generation.clock.token)
        report = self._call_report(generation)
        if report:
            source = generation.source
            pipeline = source.report_to if source.report_to is not None else generation.pipeline
            # Pipelines that share the run's scheduler cannot be told apart: each reports it.
            sharing = [p for ref in self._pipelines if (p := ref()) is not None and p is not pipeline
                       and source.scheduler is not None and scheduler_of(p) is source.scheduler]
            for owner in [pipeline, *sharing]:
                self._reports[id(owner)] = (weakref.ref(owner) if owner is not None else None, report)
            self._last_report = report
        self._reports = {k: v for k, v in self._reports.items() if v[0] is None or v[0]() is not None}
        # Only a run that got to its last step can be followed by another run of the same call; one cut short
        # (the call raised) is followed by a new call.
        earlier = getattr(self._local, "earlier", None)
        count = earlier.runs + 1 if earlier is not None and earlier.report else 1
        self._local.earlier = (None if call_over or not generation.reached_end()
                               else _Earlier(generation.pipeline, report, count))

    def _call_report(self, generation: Generation) -> list[BranchSummary]:
        """The report of the pipeline call so far: earlier runs of the call, then ``generation``'s."""
        rows = generation.summaries()
        earlier = getattr(self._local, "earlier", None)
        if earlier is None or not earlier.report:
            return rows
        run = earlier.runs + 1
        return [*earlier.report, *(dataclasses.replace(b, branch=f"{b.branch} (run {run})") for b in rows)]

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
        if pipeline is None or not self.knows(pipeline):
            # A pipeline Spectrum was not enabled through (a from_pipe sibling sharing the scheduler) has its
            # runs placed as the enabling pipeline's: its report is the denoiser's last.
            return self._last_report
        ref, report = self._reports.get(id(pipeline), (None, []))
        return report if ref is not None and ref() is pipeline else []


def _part_of_call_refusal(config: SpectrumConfig, denoiser: str, clock: SchedulerClock, steps_run: TimestepRange) -> str:
    """Why an explicit schedule does not fit a denoiser that runs part of its pipeline call's steps, in the
    call's own step count (schedule.compute_steps' message would give the denoiser's part as the run's)."""
    steps = clock.call_steps()
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


def _continues(generation: Generation, name: str, fields: StepFields) -> bool:
    """Whether loop index ``fields.step_index`` continues ``generation`` for branch ``name`` (it does not go back)."""
    branch = generation.branches.get(name)
    step = branch.step if branch is not None else -1
    return generation.clock.continues(step, fields.step_index, fields.num_inference_steps)
