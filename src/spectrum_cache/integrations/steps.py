"""Where a generation's step count and current step come from: the step source.

Only what diffusers passes or the user declares is read; nothing looks at a caller's frame. When a
generation starts, its call is placed by the first of these that applies (``find_source``):

1. diffusers' ``CacheContext`` fields, where the loop passes ``step_index`` and ``num_inference_steps``
   (``cache_context("cond", step_index=i, num_inference_steps=n)``, as the Cosmos 3 pipelines do).
2. The thread's latest scheduler run (``runs.RunWatch``: the ``set_timesteps`` call that began the loop):
   the pipeline Spectrum was enabled on whose scheduler that is (its guider, its decision to run CFG, the
   steps it runs on this denoiser), else the ``denoising_loop`` or bare denoiser that declared that
   scheduler.
3. A hand-written loop's own word: ``with spectrum_cache.denoising_loop(pipe_or_denoiser, scheduler=...)``
   (or ``num_inference_steps=...``), declared after the thread's latest run.
4. An enabled pipeline's scheduler whose run this thread did not see begin (set_timesteps called before
   ``enable_spectrum``, or a scheduler swapped in after it), the scheduler given to ``enable_spectrum``,
   then the configured ``num_inference_steps``.

What cannot be told this way, and what happens there (docs/how-it-works.md lists it):
- a ``from_pipe`` sibling with a scheduler of its own that Spectrum was not enabled on: its runs are not
  seen, so its calls are placed by the enabled pipeline's scheduler, whose timesteps are then those of a
  finished generation (or were never set): they run the network, with a warning that names
  ``enable_spectrum(sibling)``;
- a pipeline that runs classifier-free guidance without saying so (no ``do_classifier_free_guidance``
  property, no guider: PixArt, CogVideoX, Stable Audio): paired forecasting tells it from the first call's
  own latents (``planning.stacked_twice``, one host sync per generation in that mode);
- a pipeline that slices its timesteps without ``set_begin_index`` and without a ``num_timesteps``
  property (a few deprecated ones): it is planned as if its loop started at the first timestep.
A source that cannot be right is never planned: a scheduler whose ``set_timesteps`` was never called
(diffusers' flow-matching schedulers hold 1000 training timesteps from ``__init__``) makes the call run
the network, with a warning that names the fix.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from diffusers.utils.torch_utils import unwrap_module

from .adapters import DENOISER_COMPONENTS
from .generation import Unplaced

try:  # diffusers' modular pipelines (0.35 on)
    from diffusers.modular_pipelines import ModularPipeline
except ImportError:  # pragma: no cover - older diffusers
    ModularPipeline = ()


@dataclass
class StepSource:
    """What places a generation's calls.

    ``scheduler`` set: its timesteps and ``step_index``; else ``num_steps`` as a bare loop's count
    (steps are the distinct timesteps seen). ``pipeline`` is the running pipeline (None for a loop),
    ``component`` the denoiser's name in it, ``uses_cfg`` its decision to run CFG (None: unknown),
    ``guider`` a modular pipeline's guider, which names each call's branch.
    """

    scheduler: Any = None
    num_steps: int | None = None
    pipeline: Any = None
    component: str | None = None
    uses_cfg: bool | None = None
    guider: Any = None
    origin: str = "configured"  # for messages: "pipeline", "loop", "enable", "configured"
    report_to: Any = None  # the pipeline whose spectrum_summary reports a loop's generation
    begin: int | None = None  # the scheduler index the call's loop starts at, where the scheduler does not say


@dataclass(frozen=True)
class DeclaredLoop:
    """What a hand-written loop said it runs (``denoising_loop``)."""

    scheduler: Any = None
    num_steps: int | None = None
    pipeline: Any = None  # the pipeline the loop was declared on, for its summary


@dataclass(frozen=True)
class Event:
    """A thread's latest run (a watched ``set_timesteps``: ``scheduler`` set) or loop declaration
    (``loop`` set), numbered in the order they happened (``order``)."""

    order: int
    scheduler: Any = None
    loop: DeclaredLoop | None = None


def find_source(denoiser: torch.nn.Module, run: Event | None, declared: Event | None, pipelines: list[Any],
                pipelines_gone: bool, enable_scheduler: Any, configured_steps: int | None) -> StepSource:
    """The step source of a generation that starts with this call (sources 2-4 of the module docstring).

    ``run`` and ``declared`` are the thread's latest scheduler run and loop declaration, ``pipelines`` the
    live pipelines Spectrum was enabled through (the first one first), ``pipelines_gone`` whether one of
    them no longer exists."""
    loop = declared.loop if declared is not None and declared.loop is not None else None
    if run is not None and (declared is None or run.order > declared.order):
        pipeline = next((p for p in pipelines if scheduler_of(p) is run.scheduler), None)
        if pipeline is not None:
            return pipeline_source(pipeline, denoiser)
        if loop is not None and loop.scheduler is run.scheduler:
            return StepSource(loop.scheduler, origin="loop", report_to=loop.pipeline)
        if run.scheduler is enable_scheduler:
            return StepSource(enable_scheduler, origin="enable")
    if loop is not None:
        return StepSource(loop.scheduler, loop.num_steps, origin="loop", report_to=loop.pipeline)
    if enable_scheduler is not None:
        return StepSource(enable_scheduler, origin="enable")
    with_scheduler = next((p for p in pipelines if scheduler_of(p) is not None), None)
    if with_scheduler is not None:
        return pipeline_source(with_scheduler, denoiser)
    if pipelines_gone and configured_steps is None:
        raise Unplaced(
            "gone",
            "the pipeline Spectrum was enabled on no longer exists and this call does not come from a "
            "pipeline, so the step count is unknown; running the network. Enable Spectrum on the pipeline "
            "you run, or on the bare denoiser with scheduler=... or num_inference_steps.",
        )
    if pipelines and configured_steps is None:
        # A pipeline without a scheduler (Echo's modular blocks step their own sigmas).
        raise Unplaced("no-scheduler", f"{type(pipelines[0]).__name__} has no scheduler, so the step count is "
                       "unknown; running the network. Set SpectrumConfig(num_inference_steps=N), or wrap the call "
                       "in spectrum_cache.denoising_loop(pipe, num_inference_steps=N).")
    return StepSource(None, configured_steps, report_to=pipelines[0] if pipelines else None)


def pipeline_source(pipeline: Any, denoiser: torch.nn.Module) -> StepSource:
    """The step source of a call of ``pipeline``: its scheduler, guider, CFG decision and loop start."""
    component = component_of(pipeline, denoiser)
    modular = bool(ModularPipeline) and isinstance(pipeline, ModularPipeline)
    guider = guider_of(pipeline, component) if modular else None
    scheduler = scheduler_of(pipeline)
    return StepSource(scheduler, None, pipeline, component, uses_cfg(pipeline, guider), guider, "pipeline",
                      begin=loop_begin(pipeline, scheduler))


def scheduler_of(pipeline: Any) -> Any:
    try:
        return getattr(pipeline, "scheduler", None)
    except Exception:  # a modular pipeline's component that is not loaded
        return None


def loop_begin(pipeline: Any, scheduler: Any) -> int | None:
    """Where ``pipeline``'s running call starts in ``scheduler.timesteps``, when the scheduler's own
    ``begin_index`` is unset.

    Strength < 1 keeps the last steps of the schedule. SDXL's and FLUX's img2img say where they start
    (``set_begin_index``); Wan's and CogVideoX's video-to-video, AnimateDiff's and others slice
    ``timesteps`` and let the scheduler find its index at the first ``step()``, after the first call.
    They set ``num_timesteps`` (the length of the loop) before the loop starts: the loop is the last
    ``num_timesteps`` of the scheduler's timesteps."""
    if getattr(scheduler, "begin_index", None) is not None:
        return None
    try:
        loop = getattr(pipeline, "num_timesteps", None)
    except Exception:  # the property reads state a pipeline sets in its call (a modular pipeline has none)
        return None
    full = getattr(scheduler, "timesteps", None)
    if isinstance(loop, bool) or not isinstance(loop, int) or full is None:
        return None
    n = len(full)
    return n - loop if 0 < loop < n else None


def check_ready(scheduler: Any, origin: str) -> None:
    """Refuse a scheduler whose timesteps are not those of a run (set_timesteps never called)."""
    # diffusers' schedulers set num_inference_steps in set_timesteps (FlowMatchEuler has none before).
    if getattr(scheduler, "timesteps", None) is None or getattr(scheduler, "num_inference_steps", None) is None:
        where = {"enable": "the scheduler Spectrum was enabled with",
                 "loop": "the scheduler given to denoising_loop"}.get(origin, "the pipeline's scheduler")
        raise Unplaced(
            "no-timesteps",
            f"{where} ({type(scheduler).__name__}) has had no set_timesteps() call, so the step count is unknown; "
            "running the network. A hand-written loop that drives its own scheduler says so with "
            "`with spectrum_cache.denoising_loop(pipe, scheduler=my_scheduler):` around the loop, after "
            "my_scheduler.set_timesteps(...)."
            + (" A from_pipe sibling with a scheduler of its own is placed once Spectrum is enabled on it too: "
               "enable_spectrum(sibling)." if origin == "pipeline" else ""),
        )


def guider_of(pipeline: Any, component: str | None) -> Any:
    """A modular pipeline's guider for ``component``: Wan2.2's second expert has ``guider_2``."""
    suffix = component.removeprefix("transformer") if component and component.startswith("transformer") else ""
    for name in (f"guider{suffix}", "guider"):
        try:
            guider = getattr(pipeline, name, None)
        except Exception:  # a component that is not loaded
            guider = None
        if guider is not None:
            return guider
    return None


def component_of(pipeline: Any, denoiser: torch.nn.Module) -> str | None:
    """The name ``pipeline`` holds ``denoiser`` under (``transformer``, ``transformer_2``, ``unet`` ...)."""
    for name in DENOISER_COMPONENTS:
        try:
            module = getattr(pipeline, name, None)
        except Exception:  # a modular pipeline's component that is not loaded
            continue
        if module is not None and unwrap_module(module) is denoiser:
            return name
    return None


def uses_cfg(pipeline: Any, guider: Any = None) -> bool | None:
    """The running call's own decision to run CFG: a modular pipeline's guider (more than one
    condition), else the ``do_classifier_free_guidance`` property most pipelines define; None where
    nothing says."""
    if guider is not None:
        try:
            return int(guider.num_conditions) > 1
        except Exception:  # a guider whose state is not set yet
            return None
    try:
        flag = getattr(pipeline, "do_classifier_free_guidance", None)
    except Exception:  # a property reading state the call has not set
        return None
    return flag if isinstance(flag, bool) else None
