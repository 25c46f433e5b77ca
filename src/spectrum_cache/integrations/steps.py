"""Where a generation's step count and current step come from: the step source.

A denoiser call is placed by the first of these that applies (``find_source``):

1. diffusers' ``CacheContext`` fields, where the loop passes ``step_index`` and ``num_inference_steps``
   (``cache_context("cond", step_index=i, num_inference_steps=n)``, as the Cosmos 3 pipelines do).
2. The pipeline running the call, a ``DiffusionPipeline`` or a ``ModularPipeline``: its scheduler (a
   modular pipeline's component), its decision to run CFG (a modular pipeline's guider), the steps
   it runs on this denoiser (Wan2.2's experts, SDXL's ``denoising_end``).
3. A hand-written loop's own word: ``with spectrum_cache.denoising_loop(pipe_or_denoiser, scheduler=...)``
   (or ``num_inference_steps=...``).
4. The scheduler given to ``enable_spectrum``, then the enabling pipeline's, then the configured
   ``num_inference_steps``.

The search runs when a generation starts, not on every call. A source that cannot be right is never
planned: a scheduler whose ``set_timesteps`` was never called (diffusers' flow-matching schedulers
hold 1000 training timesteps from ``__init__``) makes the call run the network, with a warning that
names the fix.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

import torch
from diffusers import DiffusionPipeline
from diffusers.utils.torch_utils import unwrap_module

from .adapters import DENOISER_COMPONENTS
from .generation import Unplaced

try:  # diffusers' modular pipelines (0.35 on)
    from diffusers.modular_pipelines import ModularPipeline
except ImportError:  # pragma: no cover - older diffusers
    ModularPipeline = ()  # type: ignore[assignment,misc]

PIPELINE_TYPES = (DiffusionPipeline, ModularPipeline) if ModularPipeline else (DiffusionPipeline,)
# How far up the stack a call looks for the pipeline running it. A modular pipeline's denoiser runs
# under several block wrappers, and hooks, accelerate and torch.compile add frames of their own.
_MAX_CALLER_FRAMES = 64


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
    call: CallMark | None = None  # the pipeline call that runs the generation
    begin: int | None = None  # the scheduler index the call's loop starts at, where the scheduler does not say


@dataclass(frozen=True)
class CallMark:
    """One running pipeline call: its outermost frame holding the pipeline (``__call__``), known by
    identity without keeping the frame (a kept frame keeps the call's tensors)."""

    frame_id: int
    code: Any
    local: str  # "self" or "components"
    owner: Any

    def running(self) -> bool:
        """Whether this call is still on this thread's stack. A call that ended early (interrupted, raised,
        stopped at ``denoising_end``) is not, so the next pipeline on the same denoiser gets a generation of
        its own. The owner check covers a new frame at the address of one that is gone."""
        frame = sys._getframe(1)
        for _ in range(_MAX_CALLER_FRAMES):
            if frame is None:
                return False
            if id(frame) == self.frame_id and frame.f_code is self.code:
                return frame.f_locals.get(self.local) is self.owner
            frame = frame.f_back
        return False


@dataclass(frozen=True)
class DeclaredLoop:
    """What a hand-written loop said it runs (``denoising_loop``)."""

    scheduler: Any = None
    num_steps: int | None = None
    pipeline: Any = None  # the pipeline the loop was declared on, for its summary


def find_source(denoiser: torch.nn.Module, denoiser_name: str, declared: DeclaredLoop | None,
                enable_scheduler: Any, enable_pipeline: Any, configured_steps: int | None) -> StepSource:
    """The step source of a generation that starts with this call (sources 2-4 of the module docstring)."""
    pipeline, component, call_locals, call = running_pipeline(denoiser)
    scheduler = getattr(pipeline, "scheduler", None) if pipeline is not None else None
    if scheduler is not None:
        guider = _guider_of(pipeline, component) if ModularPipeline and isinstance(pipeline, ModularPipeline) else None
        return StepSource(scheduler, None, pipeline, component, uses_cfg(pipeline, call_locals, guider), guider,
                          "pipeline", call=call, begin=loop_begin(scheduler, call_locals))
    # A running pipeline without a scheduler (Echo's modular blocks step their own sigmas): the loop's own
    # word or the configured step count, as for a hand-written loop.
    without = f"{type(pipeline).__name__} has no scheduler" if pipeline is not None else None
    if declared is not None:
        return StepSource(declared.scheduler, declared.num_steps, origin="loop", report_to=declared.pipeline)
    if enable_scheduler is not None:
        return StepSource(enable_scheduler, origin="enable")
    if enable_pipeline is not None and getattr(enable_pipeline, "scheduler", None) is not None:
        return StepSource(enable_pipeline.scheduler, None, enable_pipeline, denoiser_name, origin="enable")
    if without is not None and configured_steps is None:
        raise Unplaced("no-scheduler", f"{without}, so the step count is unknown; running the network. Set "
                       "SpectrumConfig(num_inference_steps=N), or wrap the call in spectrum_cache.denoising_loop(pipe, "
                       "num_inference_steps=N).")
    return StepSource(None, configured_steps, report_to=pipeline)


def loop_begin(scheduler: Any, call_locals: dict[str, Any] | None) -> int | None:
    """Where the running call's loop starts in ``scheduler.timesteps``, when the scheduler's own
    ``begin_index`` is unset: the call's ``timesteps`` local is then a tail of the scheduler's.

    Strength < 1 keeps the last steps of the schedule. SDXL's and FLUX's img2img say where they start
    (``set_begin_index``); Wan's and CogVideoX's video-to-video, AnimateDiff's and others slice
    ``timesteps`` and let the scheduler find its index at the first ``step()``, after the first call."""
    if getattr(scheduler, "begin_index", None) is not None or call_locals is None:
        return None
    loop, full = call_locals.get("timesteps"), getattr(scheduler, "timesteps", None)
    if not isinstance(loop, torch.Tensor) or not isinstance(full, torch.Tensor) or loop.dim() != 1:
        return None
    n, m = len(full), len(loop)
    if not 0 < m < n:
        return None
    tail = full[n - m:]
    if torch.equal(tail, loop.to(tail.device, tail.dtype)):  # one sync per generation
        return n - m
    return None


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
            "my_scheduler.set_timesteps(...).",
        )


def running_pipeline(denoiser: torch.nn.Module) -> tuple[Any, str | None, dict[str, Any] | None, CallMark | None]:
    """The pipeline whose call is running ``denoiser`` in this thread, the component name it has there,
    that frame's locals and the mark of the call; (None, None, None, None) where no pipeline is running.

    It is the nearest caller frame with a pipeline holding the denoiser as its ``self`` (a
    DiffusionPipeline's ``__call__``), or a modular pipeline as the ``components`` argument its blocks
    take. A user's function that merely takes a pipeline argument is not a pipeline call. The call's
    mark is the outermost such frame of the same pipeline: a modular pipeline's blocks are new frames
    every step, its ``__call__`` is not."""
    frame = sys._getframe(1)
    found: tuple[Any, str, dict[str, Any] | None] | None = None
    call: CallMark | None = None
    for _ in range(_MAX_CALLER_FRAMES):
        if frame is None:
            break
        code = frame.f_code
        names = [n for n in code.co_varnames[: min(code.co_argcount, 2)] if n in ("self", "components")]
        if found is not None and names:
            # Above the pipeline's frames: the first frame of another object ends the call's frames, and
            # the walk stops there (reading more frames' f_locals would make 3.11 keep snapshots of them).
            mine = next((n for n in names if frame.f_locals.get(n) is found[0]), None)
            if mine is None:
                break
            call = CallMark(id(frame), code, mine, found[0])
            names = []
        for name in names:
            owner = frame.f_locals.get(name)
            if (name == "self" and isinstance(owner, PIPELINE_TYPES)) or (
                    name == "components" and ModularPipeline and isinstance(owner, ModularPipeline)):
                component = _component_of(owner, denoiser)
                if component is not None:
                    found = (owner, component, frame.f_locals if name == "self" else None)
                    call = CallMark(id(frame), code, name, owner)
                    break
        frame = frame.f_back
    if found is None:
        return None, None, None, None
    return (*found, call)


def _guider_of(pipeline: Any, component: str | None) -> Any:
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


def _component_of(pipeline: Any, denoiser: torch.nn.Module) -> str | None:
    for name in DENOISER_COMPONENTS:
        try:
            module = getattr(pipeline, name, None)
        except Exception:  # a modular pipeline's component that is not loaded
            continue
        if module is not None and unwrap_module(module) is denoiser:
            return name
    return None


def uses_cfg(pipeline: Any, call_locals: dict[str, Any] | None, guider: Any = None) -> bool | None:
    """The running call's own decision to run CFG: a modular pipeline's guider (more than one
    condition), a ``do_classifier_free_guidance`` local (PixArt, CogVideoX keep it there), else the
    property most pipelines define; None where nothing says."""
    if guider is not None:
        try:
            return int(guider.num_conditions) > 1
        except Exception:  # a guider whose state is not set yet
            return None
    if call_locals is None:
        return None
    flag = call_locals.get("do_classifier_free_guidance")
    if isinstance(flag, bool):
        return flag
    try:
        flag = getattr(pipeline, "do_classifier_free_guidance", None)
    except Exception:  # a property reading state the call has not set
        return None
    return flag if isinstance(flag, bool) else None


def guider_branch(guider: Any) -> str | None:
    """The prediction a modular pipeline's guider is preparing the denoiser for (``pred_cond`` ...):
    guiders count ``prepare_models`` calls within a step and list their predictions in order."""
    names = getattr(guider, "_input_predictions", None)
    count = getattr(guider, "_count_prepared", 0)
    if isinstance(names, (list, tuple)) and isinstance(count, int) and 1 <= count <= len(names):
        return str(names[count - 1])
    return None


def guider_mark(guider: Any) -> tuple:
    """Where the guider is: its step, its prepare count within the step, and the step's timestep object. Two
    calls with the same mark were not both prepared by it."""
    return (getattr(guider, "_step", None), getattr(guider, "_count_prepared", None),
            id(getattr(guider, "_timestep", None)))
