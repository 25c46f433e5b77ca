"""Living beside other libraries: accelerate's offload wrappers, pickle and deepcopy.

This is the one module that reads other libraries' private attributes. Each was checked against the versions
the project pins or tests: diffusers 0.42.1, accelerate 1.16.0 (``_hf_hook``, ``_old_forward``), cache-dit 1.5.3
(``_is_cached``); the functions below say which attribute they read.

accelerate. Model and sequential CPU offload wrap ``module.forward`` and keep the forward they
wrapped in ``module._old_forward``, which they put back when they remove their hook (diffusers does
that after every pipeline call). ``register_hook`` / ``remove_hook`` therefore put Spectrum's hooks
under accelerate's, into ``_old_forward``, so both survive either order.

Other caches. ``other_cache`` names a cache that holds a denoiser, read from the marks each one
leaves: diffusers' ``enable_cache`` (its ``_cache_config``), cache-dit's ``enable_cache`` (it sets
``_is_cached`` on the transformer and replaces its ``forward``, so a hook under it never runs), and any
diffusers ModelHook whose module, class or registry name says "cache" (diffusers' own caches, and third-party
ones built on ModelHook). Stacking two caches is refused either way: each would skip work the other
plans around, and a cache that replaces the forward silently switches Spectrum off.

pickle and deepcopy. diffusers' HookRegistry wraps forwards in local functions, which cannot be
pickled: ``Unpicklable`` says so by name. A deepcopy of a Spectrum hook is an inert placeholder;
``api`` enables Spectrum afresh on a copied denoiser, and ``controlnet`` removes the hook from a copied
ControlNet (hooking it for the copied denoiser where the whole pipeline is copied).

Guiders. A modular pipeline's guider says which prediction it prepares the denoiser for only through its private
``_input_predictions`` (the public ``get_state()`` gives its step, timestep and how many calls it prepared):
``guider_branch`` and ``guider_mark`` read them here.

Progress bars. diffusers keeps a pipeline's progress-bar settings in ``_progress_bar_config`` (a dict, absent
until set or until the first bar), and a modular pipeline in each of its loop blocks. ``set_progress_bar_config``
replaces them and there is no public getter, so ``progress_bars_hidden`` reads them here to put them back.
"""

from __future__ import annotations

import contextlib
import pickle
from collections.abc import Iterator
from typing import Any

import torch
from diffusers.hooks.hooks import HookRegistry, ModelHook


@contextlib.contextmanager
def _under_accelerate(module: torch.nn.Module) -> Iterator[None]:
    """While inside, ``module.forward`` is the forward accelerate wraps (if it wraps one)."""
    if not (hasattr(module, "_hf_hook") and hasattr(module, "_old_forward")):
        yield
        return
    outer = module.forward
    setattr(module, "forward", module._old_forward)  # noqa: B010 - nn.Module types forward as a method
    try:
        yield
    finally:
        setattr(module, "_old_forward", module.forward)  # noqa: B010
        setattr(module, "forward", outer)  # noqa: B010


# The registry names of Spectrum's own hooks (hooks.SPECTRUM_HOOKS; repeated to keep this module free of imports).
_OWN_HOOK_PREFIX = "spectrum_cache"


def _cache_hooks(module: torch.nn.Module) -> Iterator[tuple[str, ModelHook]]:
    """(registry name, hook) for each ModelHook in ``module``'s tree that is not Spectrum's and says "cache"."""
    for submodule in module.modules():
        registry = hook_registry(submodule)
        for name, hook in (registry.hooks.items() if registry is not None else ()):
            if name.startswith(_OWN_HOOK_PREFIX):
                continue
            said = f"{name} {type(hook).__module__} {type(hook).__name__}".lower()
            if "cache" in said:
                yield name, hook


def other_cache(module: torch.nn.Module) -> str | None:
    """The cache other than Spectrum that holds ``module`` (a phrase naming it and how to remove it), or None."""
    if getattr(module, "_is_cached", False):  # cache-dit's mark on the transformer it cached
        return "cache-dit (cache_dit.enable_cache; remove it with cache_dit.disable_cache)"
    config = cache_config(module)
    if config is not None and type(config).__module__.split(".")[0] != "spectrum_cache":
        return f"diffusers' {type(config).__name__} (enable_cache; remove it with disable_cache())"
    for name, hook in _cache_hooks(module):
        return f"the hook {name!r} ({type(hook).__module__}.{type(hook).__name__}; remove it before stacking)"
    return None


@contextlib.contextmanager
def progress_bars_hidden(pipe: Any) -> Iterator[None]:
    """While inside, ``pipe`` draws no progress bar of its own; after, its settings are the ones it had (an
    absent setting stays absent, so diffusers' default applies again)."""
    holders = _progress_bar_holders(pipe)
    saved = [(holder, "_progress_bar_config" in vars(holder), vars(holder).get("_progress_bar_config"))
             for holder in holders]
    for holder in holders:
        holder.set_progress_bar_config(disable=True)
    try:
        yield
    finally:
        for holder, had, config in saved:
            if had:
                holder._progress_bar_config = config
            else:
                vars(holder).pop("_progress_bar_config", None)


def _progress_bar_holders(pipe: Any) -> list[Any]:
    """The objects whose ``_progress_bar_config`` the pipeline's bars read: the pipeline, or a modular
    pipeline's blocks at any depth (its own ``set_progress_bar_config`` reaches the top level only)."""
    blocks = getattr(pipe, "_blocks", None)
    if blocks is None:
        return [pipe] if hasattr(pipe, "set_progress_bar_config") else []
    holders, stack = [], [blocks]
    while stack:
        block = stack.pop()
        if hasattr(block, "progress_bar") and hasattr(block, "set_progress_bar_config"):
            holders.append(block)
        stack.extend(getattr(block, "sub_blocks", {}).values())
    return holders


def register_hook(module: torch.nn.Module, hook: ModelHook, name: str) -> None:
    with _under_accelerate(module):
        HookRegistry.check_if_exists_or_initialize(module).register_hook(hook, name)


def remove_hook(module: torch.nn.Module, name: str) -> None:
    registry = hook_registry(module)
    if registry is not None and name in registry.hooks:
        with _under_accelerate(module):
            registry.remove_hook(name, recurse=False)


# diffusers' pipelines end every __call__ with maybe_free_model_hooks(), which calls _reset_stateful_cache() on each
# component that has it (CacheMixin's; checked against diffusers 0.42.1). Spectrum's hook ends its generation there.
# A denoiser without CacheMixin (the SD/SDXL UNet, SD3, PixArt, Sana, ...) is given one while Spectrum is on, so its
# generation ends with the pipeline call as on the others instead of living on until the next call.
END_OF_CALL_ATTR = "_reset_stateful_cache"


def lacks_end_of_call(module: torch.nn.Module) -> bool:
    """Whether ``module``'s class has no ``_reset_stateful_cache`` for diffusers to call at a pipeline call's end."""
    return not hasattr(type(module), END_OF_CALL_ATTR)


class Unpicklable:
    """Mixed into Spectrum's hooks: pickling names the way out; deepcopy gives an inert hook."""

    def __reduce_ex__(self, protocol: object) -> Any:
        raise pickle.PicklingError(
            "a module with Spectrum enabled cannot be pickled (diffusers' hook wrappers are local functions): "
            "call spectrum_cache.disable_spectrum(model) before pickle or torch.save, or save the weights with "
            "save_pretrained() or state_dict(), which work while Spectrum is enabled."
        )

    def __deepcopy__(self, memo: dict) -> ModelHook:
        return ModelHook()


# Checked against diffusers 0.42.1 (guiders/guider_utils.py: BaseGuidance).
def guider_branch(guider: Any) -> str | None:
    """The prediction a modular pipeline's guider is preparing the denoiser for (``pred_cond`` ...):
    guiders count ``prepare_models`` calls within a step and list their predictions in order."""
    names = getattr(guider, "_input_predictions", None)
    count = _guider_state(guider).get("count_prepared", 0)
    if isinstance(names, (list, tuple)) and isinstance(count, int) and 1 <= count <= len(names):
        return str(names[count - 1])
    return None


def guider_mark(guider: Any) -> tuple:
    """Where the guider is: its step, its prepare count within the step, and the step's timestep object. Two
    calls with the same mark were not both prepared by it."""
    state = _guider_state(guider)
    return state.get("step"), state.get("count_prepared"), id(state.get("timestep"))


def guider_step(guider: Any) -> int | None:
    """The loop step the guider was last set to (``set_state``), or None."""
    step = _guider_state(guider).get("step")
    return step if isinstance(step, int) else None


def _guider_state(guider: Any) -> dict:
    try:
        state = guider.get_state()
    except Exception:  # not a diffusers guider, or one whose state is not set
        return {}
    return state if isinstance(state, dict) else {}


# Checked against diffusers 0.42.1 (hooks/hooks.py: HookRegistry.check_if_exists_or_initialize keeps the registry
# there; there is no public getter that does not create one).
_REGISTRY_ATTR = "_diffusers_hook"


def hook_registry(module: torch.nn.Module) -> HookRegistry | None:
    """``module``'s diffusers HookRegistry, or None where it has none (without creating one)."""
    return getattr(module, _REGISTRY_ATTR, None)


# Checked against diffusers 0.42.1 (models/cache_utils.py: CacheMixin keeps the enabled cache's config there).
def cache_config(module: torch.nn.Module) -> Any:
    """The config of the cache diffusers' ``enable_cache`` put on ``module`` (CacheMixin), or None."""
    return getattr(module, "_cache_config", None)


def has_cache_config(module: torch.nn.Module) -> bool:
    """Whether ``module`` has CacheMixin's cache config (its enable_cache / disable_cache)."""
    return hasattr(module, "_cache_config")


def set_cache_config(module: torch.nn.Module, config: Any) -> None:
    """Mark ``module`` as holding the cache ``config`` (None: none), as CacheMixin's enable_cache does."""
    module._cache_config = config


# Checked against diffusers 0.42.1 (models/modeling_utils.py: enable_parallelism sets it).
def context_parallel(module: torch.nn.Module) -> bool:
    """Whether ``module`` runs under diffusers' context parallelism."""
    return getattr(module, "_parallel_config", None) is not None
