"""ControlNets at forecast speed: on the denoiser's forecast steps the ControlNet does not run either.

A ControlNet's outputs are residuals that only the denoiser's skipped blocks read
(``adapters.CONTROLNET_RESIDUALS``), so on a forecast step they never reach the output. There a
``ControlNetHook`` on the pipeline's ``controlnet`` (one of ``adapters.CONTROLNET_CLASSES``) hands back
the outputs of its last run in this generation (containers copied, the same tensors: the shapes, dtype
and device the pipeline and the denoiser's forward expect) instead of running. On compute steps it runs
as without Spectrum. The ControlNet module itself is not changed; ``disable_spectrum`` removes the hook.

Knowing ahead. The pipelines call the ControlNet first in each step, with the denoiser's timestep and
before ``scheduler.step()``, so the denoiser call that follows lands on the step the ControlNet's call
would land on now. The denoiser's hook answers ``will_forecast``, with the same placement and planning
code its own calls go through: a step that is not a compute step, on a trajectory with a recorded
feature. Where it cannot tell (no generation yet, as on step 0; a generation that is over; a modular
pipeline's guider naming the branches; gradients enabled), the ControlNet runs, which is always right.

When the denoiser computes after all on such a step (a non-finite forecast, an output head not called,
new input shapes), ``before_compute`` runs the skipped ControlNet call then and copies its outputs into
the tensors it handed out, which the pipelines pass on to the denoiser as they are. A pipeline that built
new tensors from them (guess mode with CFG concatenates zeros for the uncond half) cannot be reached that
way: that step then runs with the residuals of the ControlNet's last run, and a warning says so.

The denoiser hook asks ``claim`` which of a call's per-step extra inputs the ControlNet accounts for: those
do not make the denoiser run every step, as other per-step inputs (T2I adapters) still do.
"""

from __future__ import annotations

import copy
import functools
import threading
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from diffusers.hooks.hooks import ModelHook
from diffusers.utils.torch_utils import unwrap_module
from torch.utils._pytree import tree_leaves, tree_map

from .adapters import CONTROLNET_CLASSES, CONTROLNET_COMPONENT, CONTROLNET_RESIDUALS
from .arguments import Binder
from .compat import Unpicklable, hook_registry, register_hook, remove_hook
from .generation import Generation
from .outputs import input_key

if TYPE_CHECKING:
    from .hooks import SpectrumHook

CONTROLNET_HOOK = "spectrum_cache_controlnet"


@dataclass
class _Record:
    """A generation's last ControlNet call: run (``output`` is real) or skipped at ``step`` (``output`` is
    what it handed out, ``args`` and ``kwargs`` what it was called with)."""

    output: Any
    key: tuple
    skipped: bool
    step: int | None = None
    args: tuple = ()
    kwargs: dict | None = None
    filled: bool = False  # a skipped call's outputs were filled in by a late run
    released: bool = False  # the generation's last step was run: its tensors are let go


class ControlNetCompanion:
    """The ControlNet of one Spectrum denoiser: decides per ControlNet call whether it runs (see the
    module docstring). Its state is per thread, as the denoiser's generations are."""

    def __init__(self, owner: SpectrumHook, controlnet: torch.nn.Module, residual_args: tuple[str, ...]) -> None:
        self.owner = owner
        self.controlnet = controlnet
        self.residual_args = residual_args
        # Per thread: a run whose generation is not known yet (step 0 starts it), until the denoiser call takes it.
        self._local = threading.local()
        # Per live generation (a generation that ends is dropped by its owner, and its entries with it): the
        # ControlNet's last call, and its last run, whose outputs a skipped call hands out.
        self._records: weakref.WeakKeyDictionary[Generation, _Record] = weakref.WeakKeyDictionary()
        self._runs: weakref.WeakKeyDictionary[Generation, _Record] = weakref.WeakKeyDictionary()
        self._arguments = Binder(controlnet)

    # -- the ControlNet's side ----------------------------------------------------------------
    def call(self, forward: Any, args: tuple, kwargs: dict) -> Any:
        if getattr(self._local, "forced", False):  # before_compute's late run
            return forward(*args, **kwargs)
        arguments = self._arguments(args, kwargs)
        key = input_key(arguments)
        self._local.unclaimed = None
        with self.owner._lock:
            ahead = self.owner.will_forecast(arguments.get("timestep"))
            run = self._runs.get(ahead[0]) if ahead is not None else None
            if ahead is not None and run is not None and run.key == key:
                output = _containers_copied(run.output)
                self._records[ahead[0]] = _Record(output, key, True, ahead[1], args, kwargs)
                return output
        output = forward(*args, **kwargs)
        self._local.unclaimed = _Record(output, key, False)
        return output

    # -- the denoiser's side (its hook calls these under its lock) ------------------------------
    def claim(self, extras: list[str], generation: Generation, step: int) -> list[str]:
        """The names in ``extras`` that this thread's last ControlNet call does not account for; the
        output of a run is kept as the generation's last, for the forecast steps after it."""
        run = getattr(self._local, "unclaimed", None)
        if run is not None:
            self._local.unclaimed = None
            run.step = step
            self._records[generation] = self._runs[generation] = run
        if generation not in self._records:
            return extras
        return [name for name in extras if name not in self.residual_args]

    def before_compute(self, generation: Generation | None, step: int, arguments: dict[str, Any]) -> None:
        """A denoiser call at ``step`` runs the network: if the ControlNet call of that step was skipped,
        run it now and put its outputs where the denoiser reads them."""
        passed = {id(t) for name in self.residual_args for t in _leaves((arguments or {}).get(name))}
        # The skipped call whose outputs the denoiser got (also where the call was not placed), else the skipped
        # call of this step, whose outputs the pipeline passed on as other tensors.
        record = next((r for r in self._records.values() if r.skipped and not r.filled and r.output is not None
                       and passed & {id(t) for t in _leaves(r.output)}), None)
        if record is None and generation is not None:
            record = self._records.get(generation)
            if record is None or not record.skipped or record.filled or record.step != step:
                return
        if record is None:
            return
        record.filled = True
        if record.released:
            self.owner._warn("controlnet-released", f"a second denoiser call on the last step ({step}) ran the "
                             "network where the first forecast, and the ControlNet, skipped there, was let go with "
                             "the first call: that call used the ControlNet's residuals of its last run.")
            return
        # Through the module, so that offload hooks put its weights where its inputs are.
        self._local.forced = True
        try:
            real = self.controlnet(*record.args, **(record.kwargs or {}))
        finally:
            self._local.forced = False
        given, fresh = _leaves(record.output), _leaves(real)
        if passed and passed <= {id(t) for t in given} and len(given) == len(fresh):
            for placeholder, value in zip(given, fresh):
                placeholder.copy_(value)
            return
        self.owner._warn(
            "controlnet",
            f"step {step} was planned as a forecast step, so the ControlNet did not run, but the denoiser "
            "ran the network there, and the pipeline passed it residuals built from the ControlNet's "
            "output (guess mode with CFG does), which Spectrum cannot replace: that step used the ControlNet's "
            "residuals of its last run.",
        )

    def release(self, generation: Generation | None) -> None:
        """The denoiser ran ``generation``'s last step: keep no ControlNet tensors for it (the generation
        itself may stay live until the pipeline's next call)."""
        if generation is None:
            return
        self._runs.pop(generation, None)
        record = self._records.get(generation)
        if record is not None:
            self._records[generation] = _Record(None, (), record.skipped, record.step, filled=record.filled,
                                                released=True)

    def detach(self) -> None:
        remove_hook(self.controlnet, CONTROLNET_HOOK)
        self.controlnet.__dict__.pop("__deepcopy__", None)
        if self.owner.residuals is self:
            self.owner.residuals = None


class ControlNetHook(Unpicklable, ModelHook):
    """On the pipeline's ControlNet: runs it, or on a forecast step of its denoiser hands back its last
    run's outputs (see the module docstring)."""

    def __init__(self, companion: ControlNetCompanion) -> None:
        super().__init__()
        self.companion = companion

    @torch.compiler.disable
    def new_forward(self, module: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        return self.companion.call(self.fn_ref.original_forward, args, kwargs)


def attach_controlnet(pipeline: Any, owners: list[SpectrumHook]) -> None:
    """Hook ``pipeline``'s ControlNet for the denoiser that reads its residuals, where both are known;
    an unknown ControlNet is left alone (its residuals make the denoiser run every step, with a warning)."""
    components = getattr(pipeline, "components", None)
    controlnet = components.get(CONTROLNET_COMPONENT) if isinstance(components, dict) else None
    if not isinstance(controlnet, torch.nn.Module):
        return
    controlnet = unwrap_module(controlnet)
    if type(controlnet).__name__ not in CONTROLNET_CLASSES:
        return
    consumers = [o for o in owners if type(o.module).__name__ in CONTROLNET_RESIDUALS]
    if len(consumers) != 1:
        return
    registry = hook_registry(controlnet)
    if registry is not None and registry.get_hook(CONTROLNET_HOOK) is not None:
        raise ValueError(
            f"{type(controlnet).__name__} already skips forecast steps for another pipeline's denoiser with "
            "Spectrum; call disable_spectrum on that pipeline first."
        )
    hook_controlnet(controlnet, consumers[0])


def hook_controlnet(controlnet: torch.nn.Module, owner: SpectrumHook) -> None:
    """Hook ``controlnet`` (unwrapped, one of ``CONTROLNET_CLASSES``) for ``owner``'s denoiser."""
    companion = ControlNetCompanion(owner, controlnet, CONTROLNET_RESIDUALS[type(owner.module).__name__])
    register_hook(controlnet, ControlNetHook(companion), CONTROLNET_HOOK)
    # copy.deepcopy looks __deepcopy__ up on the instance: see _deepcopy_hooked.
    setattr(controlnet, "__deepcopy__", functools.partial(_deepcopy_hooked, controlnet))  # noqa: B010
    owner.residuals = companion


def _deepcopy_hooked(controlnet: torch.nn.Module, memo: dict) -> torch.nn.Module:
    """``copy.deepcopy`` of a ControlNet that Spectrum skips: a copy without the hook, running its own weights.

    diffusers' HookRegistry sets ``forward`` to a closure over the hook chain, which deepcopy keeps as it is,
    so a plain copy would run the original ControlNet. The copy's registry is consistent (its forward
    references are bound to the copy), so removing the hook through it restores the copy's own forward. A
    denoiser copied with its pipeline hooks the copy for itself (api._deepcopy_enabled).
    """
    copier = controlnet.__dict__.pop("__deepcopy__")
    try:
        clone = copy.deepcopy(controlnet, memo)
    finally:
        controlnet.__deepcopy__ = copier
    remove_hook(clone, CONTROLNET_HOOK)
    return clone


def controlnet_hint(denoiser: torch.nn.Module, extras: list[str], hooked: bool) -> str:
    """Where ``extras`` are ControlNet residuals Spectrum could skip with the forecast steps: how."""
    residuals = CONTROLNET_RESIDUALS.get(type(denoiser).__name__, ())
    if hooked or not any(name in residuals for name in extras):
        return ""
    return (" Enabled on the pipeline (enable_spectrum(pipe)), Spectrum also skips its ControlNet on forecast "
            f"steps, if it is one of {', '.join(CONTROLNET_CLASSES)} (pipe.controlnet), and lets the denoiser "
            "forecast.")


def _containers_copied(output: Any) -> Any:
    """``output`` with its tuples and lists new (a pipeline may change them), the tensors the same; other
    containers (a BaseOutput, a namedtuple) are the same objects too."""
    return tree_map(lambda leaf: leaf, output, is_leaf=lambda node: not isinstance(node, (tuple, list))
                    or hasattr(node, "_fields"))


def _leaves(value: Any) -> list[torch.Tensor]:
    return [leaf for leaf in tree_leaves(value) if isinstance(leaf, torch.Tensor)]
