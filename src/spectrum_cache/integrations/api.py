"""enable_spectrum / disable_spectrum / spectrum_summary for diffusers pipelines and denoisers."""

from __future__ import annotations

import types
import weakref
from typing import Any

import torch
from diffusers.hooks import HookRegistry
from diffusers.utils.logging import get_logger

from ..config import SpectrumConfig
from .adapters import DENOISER_COMPONENTS, ResolvedAdapter, expert_router, resolve_adapter, timestep_argument
from .hooks import (
    BLOCK_HOOK,
    DENOISER_HOOK,
    HEAD_HOOK,
    BlockSkipHook,
    HeadInputHook,
    SchedulerSteps,
    SpectrumDenoiserHook,
)
from .summary import SpectrumSummary

logger = get_logger(__name__)
# Instance attributes Spectrum sets on a denoiser: diffusers' disable_cache() routed to disable_spectrum,
# and the last report, kept readable after disable_spectrum.
_DISABLE_CACHE_ATTR = "disable_cache"
_LAST_REPORT_ATTR = "_spectrum_last_report"

# Hooks from diffusers' own caches, found by the module that defines them.
_DIFFUSERS_CACHE_MODULES = (
    "diffusers.hooks.first_block_cache",
    "diffusers.hooks.taylorseer_cache",
    "diffusers.hooks.mag_cache",
    "diffusers.hooks.sea_cache",
    "diffusers.hooks.faster_cache",
    "diffusers.hooks.pyramid_attention_broadcast",
    "diffusers.hooks.text_kv_cache",
)


def _denoisers(target: Any) -> list[tuple[str, torch.nn.Module]]:
    """(component name, module) for a pipeline's denoisers, or the target itself."""
    if isinstance(target, torch.nn.Module):
        return [(type(target).__name__, target)]
    components = getattr(target, "components", None)
    if not isinstance(components, dict):
        raise TypeError(
            f"enable_spectrum takes a diffusers pipeline or a denoiser (nn.Module), got {type(target).__name__}."
        )
    found = [(name, components[name]) for name in DENOISER_COMPONENTS if isinstance(components.get(name), torch.nn.Module)]
    if not found:
        raise ValueError(
            f"{type(target).__name__} has no denoiser among its components {sorted(components)}; "
            f"Spectrum looks for {', '.join(DENOISER_COMPONENTS)}."
        )
    return found


def _check_free(module: torch.nn.Module) -> None:
    name = type(module).__name__
    if _denoiser_hook(module) is not None:
        raise ValueError(f"Spectrum is already enabled on {name}; call disable_spectrum first.")
    if getattr(module, "is_cache_enabled", False):
        raise ValueError(
            f"{name} already has a diffusers cache enabled ({type(module._cache_config).__name__}); "
            "call disable_cache() before enabling Spectrum."
        )
    for submodule in module.modules():
        registry = getattr(submodule, "_diffusers_hook", None)
        for hook in (registry.hooks.values() if registry is not None else ()):
            if type(hook).__module__ in _DIFFUSERS_CACHE_MODULES:
                raise ValueError(
                    f"{name} already has a diffusers cache hook ({type(hook).__name__}); remove it before enabling Spectrum."
                )


def _denoiser_hook(module: torch.nn.Module) -> SpectrumDenoiserHook | None:
    registry = getattr(module, "_diffusers_hook", None)
    return registry.get_hook(DENOISER_HOOK) if registry is not None else None


def enable_spectrum(target: Any, config: SpectrumConfig | None = None, *, scheduler: Any = None) -> None:
    """Run ``target`` with Spectrum: a diffusers pipeline (every denoiser it has, e.g. Wan2.2's two
    experts each with their own forecasters), or a bare denoiser.

    A pipeline's step count and current step come from its scheduler at run time. For a bare denoiser
    pass the ``scheduler`` that drives it, or set ``config.num_inference_steps``.

    Raises ValueError, changing nothing, if Spectrum or a diffusers cache is already enabled, or if a
    model's layout is unknown (the error names its class).
    """
    config = SpectrumConfig() if config is None else config
    if not isinstance(config, SpectrumConfig):
        raise TypeError(f"config must be a SpectrumConfig, got {type(config).__name__}.")
    denoisers = _denoisers(target)
    is_pipeline = not isinstance(target, torch.nn.Module)
    if not is_pipeline and scheduler is None and config.num_inference_steps is None:
        raise ValueError(
            "num_inference_steps is required for a bare denoiser without a scheduler: "
            "pass scheduler=... or SpectrumConfig(num_inference_steps=N)."
        )
    plans: list[tuple[str, torch.nn.Module, ResolvedAdapter | None, str]] = []
    for name, module in denoisers:
        _check_free(module)
        adapter = None if config.forecast_output else resolve_adapter(module)
        timestep_arg = adapter.timestep_arg if adapter else timestep_argument(module)
        plans.append((name, module, adapter, timestep_arg))

    if is_pipeline:
        pipeline_ref = weakref.ref(target)
        get_scheduler = lambda: getattr(pipeline_ref(), "scheduler", None)  # noqa: E731
    elif scheduler is not None:
        get_scheduler = lambda: scheduler  # noqa: E731
    else:
        get_scheduler = None

    try:
        for name, module, adapter, timestep_arg in plans:
            steps = None
            if get_scheduler is not None:
                routes = expert_router(target, name) if is_pipeline else None
                steps = SchedulerSteps(get_scheduler, routes)
            _attach(module, name, config, adapter, timestep_arg, steps)
    except BaseException:
        for _, module, _, _ in plans:  # leave nothing half-initialised
            _detach(module)
        raise


def _attach(
    module: torch.nn.Module,
    name: str,
    config: SpectrumConfig,
    adapter: ResolvedAdapter | None,
    timestep_arg: str,
    steps: SchedulerSteps | None,
) -> None:
    owner = SpectrumDenoiserHook(config, name, timestep_arg, steps)
    HookRegistry.check_if_exists_or_initialize(module).register_hook(owner, DENOISER_HOOK)
    if adapter is not None:
        for block in adapter.blocks:
            hook = BlockSkipHook(owner)
            owner.block_hooks.append(hook)
            HookRegistry.check_if_exists_or_initialize(block).register_hook(hook, BLOCK_HOOK)
        HookRegistry.check_if_exists_or_initialize(adapter.head).register_hook(HeadInputHook(owner), HEAD_HOOK)
    HookRegistry.check_if_exists_or_initialize(module).invalidate_child_registries_cache()
    module.__dict__.pop(_LAST_REPORT_ATTR, None)  # a new run: the old report no longer applies
    if hasattr(module, "_cache_config"):
        # diffusers' enable_cache then refuses to stack a second cache on top of Spectrum, and its
        # disable_cache (which dispatches on diffusers' own config classes and would raise "Cache config
        # SpectrumConfig is not supported") is routed to disable_spectrum for this module.
        module._cache_config = config
        setattr(module, _DISABLE_CACHE_ATTR, types.MethodType(_disable_cache, module))
    logger.info(f"Spectrum enabled on {name} ({type(module).__name__}): {config}")


def _disable_cache(module: torch.nn.Module) -> None:
    """``module.disable_cache()`` while Spectrum is on: what disable_spectrum does for this module."""
    logger.info(f"{type(module).__name__}.disable_cache(): removing Spectrum (the same as disable_spectrum)")
    _detach(module)


def disable_spectrum(target: Any) -> None:
    """Remove every Spectrum hook from ``target`` (a pipeline or denoiser); a no-op where none is."""
    for _, module in _denoisers(target):
        if _denoiser_hook(module) is not None:
            _detach(module)


def _detach(module: torch.nn.Module) -> None:
    hook = _denoiser_hook(module)
    if hook is not None:
        setattr(module, _LAST_REPORT_ATTR, tuple(hook.summaries()))
    registry = HookRegistry.check_if_exists_or_initialize(module)
    for hook_name in (DENOISER_HOOK, BLOCK_HOOK, HEAD_HOOK):
        registry.remove_hook(hook_name, recurse=True)
    registry.invalidate_child_registries_cache()
    if isinstance(getattr(module, "_cache_config", None), SpectrumConfig):
        module._cache_config = None
    module.__dict__.pop(_DISABLE_CACHE_ATTR, None)  # diffusers' own disable_cache again


def spectrum_summary(target: Any) -> SpectrumSummary:
    """Per denoiser and CFG branch, what the last generation computed and forecast; after
    disable_spectrum, what the last generation with Spectrum did (``enabled`` is then False)."""
    modules = [module for _, module in _denoisers(target)]
    hooks = [hook for module in modules if (hook := _denoiser_hook(module)) is not None]
    if hooks:
        return SpectrumSummary(tuple(summary for hook in hooks for summary in hook.summaries()))
    kept = [module.__dict__[_LAST_REPORT_ATTR] for module in modules if _LAST_REPORT_ATTR in module.__dict__]
    if kept:
        return SpectrumSummary(tuple(summary for report in kept for summary in report), enabled=False)
    raise ValueError(f"Spectrum is not enabled on {type(target).__name__}; call enable_spectrum first.")
