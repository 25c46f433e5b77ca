"""enable_spectrum / disable_spectrum / spectrum_summary for diffusers pipelines and denoisers."""

from __future__ import annotations

import contextlib
import copy
import functools
import types
import warnings
from collections.abc import Iterator
from typing import Any, cast

import torch
from diffusers.hooks import HookRegistry
from diffusers.utils.logging import get_logger
from diffusers.utils.torch_utils import unwrap_module

from ..config import SpectrumConfig
from .adapters import DENOISER_COMPONENTS, ResolvedAdapter, resolve_adapter, timestep_argument
from .compat import (END_OF_CALL_ATTR, cache_config, has_cache_config, hook_registry, lacks_end_of_call, other_cache,
                     register_hook, remove_hook, set_cache_config)
from .controlnet import attach_controlnet, hook_controlnet
from .hooks import DENOISER_HOOK, HEAD_HOOK, SPECTRUM_HOOKS, STAND_IN_HOOK, SpectrumHook, SpectrumWarning
from .provenance import mismatches
from .skipping import HeadHook, StandInHook, gate_block_list, ungate_block_list
from .steps import DeclaredLoop
from .summary import SpectrumSummary

logger = get_logger(__name__)
# Instance attributes Spectrum sets on a denoiser: diffusers' disable_cache() routed to disable_spectrum,
# and the last report, kept readable after disable_spectrum.
_DISABLE_CACHE_ATTR = "disable_cache"
_LAST_REPORT_ATTR = "_spectrum_last_report"

def find_denoisers(target: Any, function: str) -> list[tuple[str, torch.nn.Module]]:
    """(component name, module) for a pipeline's denoisers (none for a pipeline without one), or the
    target itself; compiled modules (torch.compile) stand for the module they wrap. ``function`` names the
    caller in the TypeError for a target that is neither."""
    if isinstance(target, torch.nn.Module):
        module = unwrap_module(target)
        return [(type(module).__name__, module)]
    components = getattr(target, "components", None)
    if not isinstance(components, dict):
        raise TypeError(
            f"{function} takes a diffusers pipeline or a denoiser (nn.Module), got {type(target).__name__}."
        )
    found: list[tuple[str, torch.nn.Module]] = []
    for name in DENOISER_COMPONENTS:
        module = components.get(name)
        module = unwrap_module(module) if isinstance(module, torch.nn.Module) else None
        if module is not None and all(module is not other for _, other in found):  # one model in two roles: once
            found.append((name, module))
    return found


def _check_free(module: torch.nn.Module) -> None:
    name = type(module).__name__
    if denoiser_hook(module) is not None:
        raise ValueError(f"Spectrum is already enabled on {name}; call disable_spectrum first.")
    other = other_cache(module)
    if other is not None:
        raise ValueError(f"{name} is already held by another cache, {other}: Spectrum cannot be stacked on it "
                         "(each would skip work the other plans around). Remove that cache, then enable Spectrum.")


def denoiser_hook(module: torch.nn.Module) -> SpectrumHook | None:
    """The Spectrum hook on ``module`` (a denoiser), or None where Spectrum is not enabled on it."""
    registry = hook_registry(unwrap_module(module))
    # A deepcopy of the hook is a plain ModelHook placeholder (compat.Unpicklable), for the moment of the copy.
    return cast("SpectrumHook | None", registry.get_hook(DENOISER_HOOK)) if registry is not None else None


def _check_scheduler(scheduler: Any) -> None:
    if not callable(getattr(scheduler, "set_timesteps", None)) or not hasattr(scheduler, "timesteps"):
        raise ValueError(
            "scheduler must be a diffusers scheduler (an object with set_timesteps() and timesteps), "
            f"got {type(scheduler).__name__}."
        )


def enable_spectrum(target: Any, config: SpectrumConfig | None = None, *, scheduler: Any = None) -> None:
    """Run ``target`` with Spectrum: a diffusers pipeline (every denoiser it has, e.g. Wan2.2's two
    experts each with their own forecasters), or a bare denoiser.

    A pipeline's step count and current step come from its scheduler: Spectrum sees each run begin at the
    scheduler's ``set_timesteps``. For a bare denoiser pass the ``scheduler`` that drives it, or set
    ``config.num_inference_steps``.

    A pipeline whose denoisers already run Spectrum through another pipeline (a ``from_pipe`` sibling
    sharing the transformer) joins them: its calls are placed by its own scheduler from then on. Its
    config must be that one's (or None).

    Raises ValueError, changing nothing, if Spectrum or a diffusers cache is already enabled, if the
    target is not a denoiser or a model's layout is unknown (the error names its class), or if
    ``scheduler`` is not a scheduler or is given with a pipeline.
    """
    if config is not None and not isinstance(config, SpectrumConfig):
        raise TypeError(f"config must be a SpectrumConfig, got {type(config).__name__}.")
    denoisers = find_denoisers(target, "enable_spectrum")
    is_pipeline = not isinstance(target, torch.nn.Module)
    _check_target(target, denoisers, is_pipeline, scheduler)
    joined = _joined(target, denoisers, config) if is_pipeline else []
    if config is None:
        config = joined[0].config if joined else SpectrumConfig()
    if config.per_denoiser:
        _check_schedules_cover(config, denoisers, is_pipeline, target)
    plans: list[tuple[str, torch.nn.Module, ResolvedAdapter | None, str]] = []
    for name, module in denoisers:
        if any(hook.module is module for hook in joined):
            continue
        _check_free(module)
        timestep_arg = timestep_argument(module)  # first: a VAE is "not a denoiser", not "unknown layout"
        adapter = None if config.forecast_output else resolve_adapter(module)
        plans.append((name, module, adapter, timestep_arg))
    differences = mismatches(config, target, denoisers)
    if differences:
        warnings.warn(f"this schedule (compute_steps) was calibrated on another model: {'; '.join(differences)}. It "
                      "runs, but its steps were chosen for that model: calibrate again for this one "
                      "(spectrum_cache.calibrate).", SpectrumWarning, stacklevel=2)
    if not is_pipeline:
        _check_bare(target, config, scheduler)
    try:
        for name, module, adapter, timestep_arg in plans:
            _attach(module, name, config, adapter, timestep_arg, target if is_pipeline else None, scheduler)
        if is_pipeline:
            owners = [hook for _, module, _, _ in plans if (hook := denoiser_hook(module)) is not None]
            attach_controlnet(target, [*owners, *(hook for hook in joined if hook.residuals is None)])
    except BaseException:
        for _, module, _, _ in plans:  # leave nothing half-initialised
            _detach(module)
        raise
    for hook in joined:
        hook.generations.add_pipeline(target)


def _check_target(target: Any, denoisers: list[tuple[str, torch.nn.Module]], is_pipeline: bool,
                  scheduler: Any) -> None:
    if is_pipeline and not denoisers:
        raise ValueError(
            f"{type(target).__name__} has no denoiser among its components {sorted(target.components)}; "
            f"Spectrum looks for {', '.join(DENOISER_COMPONENTS)}."
        )
    if is_pipeline and scheduler is not None:
        raise ValueError(
            "enable_spectrum: scheduler= is for a bare denoiser; a pipeline runs with its own scheduler "
            "(pipe.scheduler), which Spectrum follows. Set pipe.scheduler instead."
        )


def _joined(target: Any, denoisers: list[tuple[str, torch.nn.Module]], config: SpectrumConfig | None) -> list[SpectrumHook]:
    """The Spectrum hooks ``target`` (a from_pipe sibling of a pipeline Spectrum runs on) joins; the same
    pipeline again is not a sibling (``_check_free`` refuses it)."""
    joined = [hook for _, module in denoisers if (hook := denoiser_hook(module)) is not None
              and not hook.generations.knows(target)]
    for hook in joined:
        if config is not None and hook.config != config:
            raise ValueError(f"Spectrum is already enabled on {type(hook.module).__name__} with another config; call "
                             "disable_spectrum first, or enable this pipeline with the same config (or none) to "
                             "share it.")
    return joined


def _check_bare(target: torch.nn.Module, config: SpectrumConfig, scheduler: Any) -> None:
    if scheduler is not None:
        _check_scheduler(scheduler)
    elif config.num_inference_steps is None:
        raise ValueError(
            f"num_inference_steps is required for a bare denoiser without a scheduler "
            f"({type(unwrap_module(target)).__name__}): enable Spectrum on the pipeline instead, "
            "enable_spectrum(pipe), which follows the pipeline's scheduler; for a hand-written "
            "loop, pass scheduler=... or SpectrumConfig(num_inference_steps=N)."
        )


def _check_schedules_cover(config: SpectrumConfig, denoisers: list[tuple[str, torch.nn.Module]], is_pipeline: bool,
                           target: Any) -> None:
    """Per-denoiser schedules name exactly the pipeline's denoisers (one without a schedule would run a
    schedule planned for another; a name the pipeline lacks is a schedule for another pipeline)."""
    names = [str(name) for name in (config.compute_steps or {})]
    if not is_pipeline:
        raise ValueError(
            f"compute_steps holds one schedule per denoiser of a pipeline ({', '.join(names)}); a bare denoiser "
            "takes one schedule: SpectrumConfig(num_inference_steps=<its steps>, compute_steps=(0, ...)).")
    present = [name for name, _ in denoisers]
    missing = [name for name in present if name not in names]
    unknown = [name for name in names if name not in present]
    if missing or unknown:
        raise ValueError(
            f"compute_steps has schedules for {', '.join(names)}, and {type(target).__name__}'s denoisers are "
            f"{', '.join(present)}: "
            + "; ".join([*(f"no schedule for {name}" for name in missing),
                         *(f"no denoiser {name}" for name in unknown)])
            + ". Give one schedule per denoiser of this pipeline.")


def _attach(
    module: torch.nn.Module,
    name: str,
    config: SpectrumConfig,
    adapter: ResolvedAdapter | None,
    timestep_arg: str,
    pipeline: Any,
    scheduler: Any,
) -> None:
    owner = SpectrumHook(config, name, timestep_arg, adapter, pipeline, scheduler)
    register_hook(module, owner, DENOISER_HOOK)
    if adapter is not None:
        for index, head in enumerate(adapter.heads):
            register_hook(head, HeadHook(owner.slot, index), HEAD_HOOK)
        for blocks in adapter.block_lists:
            gate_block_list(blocks, owner.gate)
        for index, stand_in in enumerate(adapter.stand_in_modules):
            register_hook(stand_in, StandInHook(owner.gate, owner.slot, index), STAND_IN_HOOK)
    HookRegistry.check_if_exists_or_initialize(module).invalidate_child_registries_cache()
    module.__dict__.pop(_LAST_REPORT_ATTR, None)  # a new run: the old report no longer applies
    if has_cache_config(module):
        # diffusers' enable_cache then refuses to stack a second cache on top of Spectrum, and its
        # disable_cache (which dispatches on diffusers' own config classes and would raise "Cache config
        # SpectrumConfig is not supported") is routed to disable_spectrum for this module.
        set_cache_config(module, config)
        setattr(module, _DISABLE_CACHE_ATTR, types.MethodType(_disable_cache, module))
    if lacks_end_of_call(module):  # its generation then ends with each pipeline call (compat.END_OF_CALL_ATTR)
        setattr(module, END_OF_CALL_ATTR, types.MethodType(_end_of_call, module))
    # copy.deepcopy looks __deepcopy__ up on the instance: see _deepcopy_enabled.
    setattr(module, "__deepcopy__", functools.partial(_deepcopy_enabled, module))  # noqa: B010
    logger.info(f"Spectrum enabled on {name} ({type(module).__name__}): {config}")


def _end_of_call(module: torch.nn.Module, recurse: bool = True) -> None:
    """What diffusers' maybe_free_model_hooks calls at the end of a pipeline call: the calling thread's
    generation is over (the hook's reset_state, as CacheMixin's _reset_stateful_cache would reach it)."""
    hook = denoiser_hook(module)
    if isinstance(hook, SpectrumHook):
        hook.reset_state(module)


def _disable_cache(module: torch.nn.Module) -> None:
    """``module.disable_cache()`` while Spectrum is on: what disable_spectrum does for this module."""
    # A warning, not info: the caller asked diffusers to drop its cache and may not expect Spectrum to go too.
    logger.warning(f"{type(module).__name__}.disable_cache(): removing Spectrum (the same as disable_spectrum)")
    _detach(module)


def _deepcopy_enabled(module: torch.nn.Module, memo: dict) -> torch.nn.Module:
    """``copy.deepcopy`` of a denoiser with Spectrum: a copy that runs its own weights with its own Spectrum.

    diffusers' HookRegistry sets ``module.forward`` to a closure over the module's hook chain, and
    deepcopy keeps closures as they are, so a plain copy would run the original module. The copy's
    registry itself is consistent, so removing Spectrum's hooks through it restores the copy's own
    forward; then Spectrum is enabled on the copy afresh (same config, the copied pipeline if the
    pipeline is being copied too). With the pipeline, the ControlNet Spectrum skips is copied too (once:
    through ``memo``) and hooked for the copy.
    """
    owner = denoiser_hook(module)
    copier = module.__dict__.pop("__deepcopy__")
    try:
        clone = copy.deepcopy(module, memo)
    finally:
        module.__deepcopy__ = copier
    _detach(clone)
    if owner is not None:
        pipeline = owner.pipeline_ref() if owner.pipeline_ref is not None else None
        pipeline = memo.get(id(pipeline), pipeline) if pipeline is not None else None
        scheduler = memo.get(id(owner.scheduler), owner.scheduler) if owner.scheduler is not None else None
        adapter = None if owner.config.forecast_output else resolve_adapter(clone)
        _attach(clone, owner.denoiser_name, owner.config, adapter, owner.timestep_arg, pipeline, scheduler)
        original = owner.pipeline_ref() if owner.pipeline_ref is not None else None
        # Only a copy of the whole pipeline has a ControlNet of its own; a denoiser copied alone leaves it to the original.
        if owner.residuals is not None and original is not None and id(original) in memo:
            clone_hook = denoiser_hook(clone)
            if clone_hook is not None:
                hook_controlnet(copy.deepcopy(owner.residuals.controlnet, memo), clone_hook)
    return clone


def disable_spectrum(target: Any) -> None:
    """Remove every Spectrum hook from ``target`` (a pipeline or denoiser), leaving other libraries'
    hooks (offloading, other diffusers hooks) in place and working; a no-op where none is."""
    for _, module in find_denoisers(target, "disable_spectrum"):
        if denoiser_hook(module) is not None:
            _detach(module)


def _detach(module: torch.nn.Module) -> None:
    hook = denoiser_hook(module)
    if isinstance(hook, SpectrumHook):  # not the inert placeholder a deepcopy of the hook is
        setattr(module, _LAST_REPORT_ATTR, tuple(hook.summaries()))
        hook.generations.unwatch_all()
        if hook.residuals is not None:
            hook.residuals.detach()
    for submodule in module.modules():
        ungate_block_list(submodule)
        if hook_registry(submodule) is not None:
            for hook_name in SPECTRUM_HOOKS:
                remove_hook(submodule, hook_name)
    HookRegistry.check_if_exists_or_initialize(module).invalidate_child_registries_cache()
    if isinstance(cache_config(module), SpectrumConfig):
        set_cache_config(module, None)
    module.__dict__.pop("__deepcopy__", None)
    module.__dict__.pop(_DISABLE_CACHE_ATTR, None)  # diffusers' own disable_cache again
    end_of_call = module.__dict__.get(END_OF_CALL_ATTR)
    if isinstance(end_of_call, types.MethodType) and end_of_call.__func__ is _end_of_call:
        del module.__dict__[END_OF_CALL_ATTR]


def spectrum_summary(target: Any) -> SpectrumSummary:
    """Per denoiser and CFG branch, what the last generation of ``target`` computed and forecast (for a
    bare denoiser: the last generation run on it by anyone); after disable_spectrum, what the last
    generation with Spectrum did (``enabled`` is then False)."""
    modules = [module for _, module in find_denoisers(target, "spectrum_summary")]
    hooks = [hook for module in modules if (hook := denoiser_hook(module)) is not None]
    if hooks:
        pipeline = None if isinstance(target, torch.nn.Module) else target
        return SpectrumSummary(tuple(summary for hook in hooks for summary in hook.summaries(pipeline)))
    kept = [module.__dict__[_LAST_REPORT_ATTR] for module in modules if _LAST_REPORT_ATTR in module.__dict__]
    if kept:
        return SpectrumSummary(tuple(summary for report in kept for summary in report), enabled=False)
    raise ValueError(f"Spectrum is not enabled on {type(target).__name__}; call enable_spectrum first.")


@contextlib.contextmanager
def denoising_loop(target: Any, *, scheduler: Any = None, num_inference_steps: int | None = None) -> Iterator[None]:
    """Say what a hand-written denoising loop runs, for the length of the ``with`` block.

    Calls of ``target``'s denoisers (a pipeline with Spectrum enabled, or such a denoiser) from this
    thread inside the block are one generation, placed by ``scheduler`` (the one the loop calls
    ``step()`` on; call its ``set_timesteps`` before the first denoiser call) or, without one, as
    ``num_inference_steps`` steps told apart by their timestep values. The block's end ends the
    generation; ``spectrum_summary`` then reports it. A pipeline call inside the block is placed by its
    own scheduler as usual.

    Raises ValueError if Spectrum is not enabled on ``target``, if neither or both of ``scheduler`` and
    ``num_inference_steps`` are given, or if either is not what it should be.
    """
    if (scheduler is None) == (num_inference_steps is None):
        raise ValueError("denoising_loop takes one of scheduler= (the scheduler the loop steps) or "
                         "num_inference_steps= (the loop's step count), got "
                         f"{'both' if scheduler is not None else 'neither'}.")
    if scheduler is not None:
        _check_scheduler(scheduler)
    elif isinstance(num_inference_steps, bool) or not isinstance(num_inference_steps, int) or num_inference_steps < 1:
        raise ValueError(f"num_inference_steps must be an integer >= 1, got {num_inference_steps!r}.")
    hooks = [hook for _, module in find_denoisers(target, "denoising_loop") if (hook := denoiser_hook(module)) is not None]
    if not hooks:
        raise ValueError(f"Spectrum is not enabled on {type(target).__name__}; call enable_spectrum first.")
    loop = DeclaredLoop(scheduler, num_inference_steps, None if isinstance(target, torch.nn.Module) else target)
    for hook in hooks:
        with hook._lock:
            hook.generations.declare(loop)
    try:
        yield
    finally:
        for hook in hooks:
            with hook._lock:
                hook.generations.declare(None)
