"""The diffusers hook that runs Spectrum on one denoiser.

``SpectrumHook`` sits on the denoiser. Per call it finds the call's branch (``contexts``), places the
call in the thread's generation (``lifecycle.Generations``, with the step source of ``steps``), plans
it (``planning.plan``), and on a forecast step shuts the skip gate (``skipping``) so that the model's
own forward runs everything but its blocks (embedders, time embedding, output head), with the forecast
as the head's input. On a compute step it records the head's input.

What the hook owns: its configuration; the skipping machinery of this denoiser (the gate, the call
slot that the hooks inside the forward read); the ``Generations`` of every thread, with their
reports; and the warnings it has said. Calls into one denoiser from several threads take turns (a
lock per denoiser; on one GPU stream they would be serialised anyway).

torch.compile. The bookkeeping runs outside the graph (``torch.compiler.disable``), so a compiled
model sees a call as either "all blocks" or "no blocks, head input given": two graphs, no
per-timestep recompiles. With regional compilation (``compile_repeated_blocks``) the compiled blocks
see no Spectrum code at all.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import warnings
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from diffusers.hooks.hooks import ModelHook

from ..config import SpectrumConfig
from ..forecast import all_finite
from .adapters import ExtraInputs, ResolvedAdapter
from .arguments import Binder
from .compat import Unpicklable, context_parallel, guider_branch, guider_mark, guider_step, other_cache
from .contexts import BranchContexts, branch_name
from .controlnet import controlnet_hint
from .generation import Generation, Trajectory, Unplaced
from .lifecycle import Generations
from .outputs import input_key, rebuild_output, split_output
from .planning import forecaster_for, forecasts, plan, stacked_twice
from .skipping import CallSlot, SkipGate, foreign_hooks, join_heads, unjoin_heads
from .summary import BranchSummary

DENOISER_HOOK = "spectrum_cache"
HEAD_HOOK = "spectrum_cache_head"
STAND_IN_HOOK = "spectrum_cache_stand_in"
SPECTRUM_HOOKS = (DENOISER_HOOK, HEAD_HOOK, STAND_IN_HOOK)
EXPORT_REFUSAL = (
    "torch.export of {model} with Spectrum enabled is not supported: Spectrum decides on every call, outside the "
    "graph, whether the blocks run. Call spectrum_cache.disable_spectrum(pipe) (or disable_spectrum(model)) "
    "before exporting, and enable_spectrum again after.")

class SpectrumWarning(UserWarning):
    """Spectrum ran the network where it would have forecast, or something runs differently under
    Spectrum than without it, and says why."""


@dataclass
class _Call:
    """What one denoiser call does; ``trajectory`` None means it just runs the network."""

    step: int = -1
    trajectory: Trajectory | None = None
    prediction: torch.Tensor | None = None  # set on forecast steps
    replacement: Any = None  # forecast_output mode: the denoiser output to return instead
    final: bool = False
    args: tuple = ()
    kwargs: dict | None = None
    arguments: dict | None = None  # the call's arguments by name, bound once
    # Where it was placed, for a trajectory that must start over on a new feature shape.
    generation: Generation | None = None
    branch: str = ""
    slot: int = 0
    batch: int | None = None


class SpectrumHook(Unpicklable, ModelHook):
    """Decides per denoiser call whether the network runs; see the module docstring."""

    _is_stateful = True

    def __init__(
        self,
        config: SpectrumConfig,
        denoiser_name: str,
        timestep_arg: str,
        layout: ResolvedAdapter | None,
        pipeline: Any = None,
        scheduler: Any = None,
    ) -> None:
        super().__init__()
        self.config = config
        self.denoiser_name = denoiser_name
        self.timestep_arg = timestep_arg
        self.layout = layout
        self.pipeline_ref = weakref.ref(pipeline) if pipeline is not None else None  # the enabling pipeline
        self.scheduler = scheduler
        self.contexts = BranchContexts()
        self._extra_inputs = ExtraInputs(layout.constant_inputs if layout is not None else ())
        self.gate = SkipGate()
        self.slot = CallSlot(len(layout.stand_in_modules) if layout is not None else 0,
                             len(layout.heads) if layout is not None else 1)
        self.slot.on_bypass = self._bypassed
        self._lock = threading.RLock()
        self.generations = Generations(config, None, denoiser_name, self._warn, self._lock, self._held_dtype, scheduler)
        if pipeline is not None:
            self.generations.add_pipeline(pipeline)
        self._warned: set[str] = set()
        self._hooks_checked: weakref.ref | None = None  # the generation whose skipped modules were checked
        self._alone_checked: weakref.ref | None = None  # the generation checked for a cache stacked on Spectrum
        self._calls = threading.local()  # per thread: the guider's state at the last call it named
        # Called with each feature a compute step records (listen; recording.py).
        self._listeners: list[Callable[[Generation, str, int, torch.Tensor], None]] = []
        self.residuals: Any = None  # the pipeline's ControlNet, where Spectrum skips it too (controlnet.py)

    # -- diffusers hook interface -------------------------------------------------------------
    def _held_dtype(self) -> torch.dtype | None:
        """The model's dtype where the adapter table says the head's input is the blocks' output upcast."""
        if self.layout is None or not self.layout.head_input_upcast or self.config.forecast_output:
            return None
        return getattr(self.module, "dtype", None)

    def initialize_hook(self, module: torch.nn.Module) -> torch.nn.Module:
        self.module = module
        self.generations.module = module
        self._arguments = Binder(module)
        return module

    def reset_state(self, module: torch.nn.Module) -> torch.nn.Module:
        # Pipelines reset stateful hooks after every call (maybe_free_model_hooks), in the thread that ran
        # it: that thread's generation is over. Other threads' generations go on.
        with self._lock:
            self.generations.end()
        self.contexts.reset()
        return module

    def pre_forward(self, module: torch.nn.Module, *args: Any, **kwargs: Any) -> tuple[tuple, dict]:
        # Non-strict torch.export refuses new_forward's non-recursive disable with an error that names
        # neither Spectrum nor the fix, before new_forward runs; a check wrapped around new_forward would
        # cost whole-model torch.compile a graph break. Strict export (dynamo) stops at new_forward, and
        # the disable's reason says it.
        if torch.compiler.is_exporting() and not torch.compiler.is_dynamo_compiling():
            raise RuntimeError(EXPORT_REFUSAL.format(model=type(module).__name__))
        return args, kwargs

    # Not traced by torch.compile, but what it calls is: the model's forward becomes a frame of its own,
    # compiled in one piece (a graph break here would make dynamo trace the whole model twice).
    @torch.compiler.disable(recursive=False, reason=EXPORT_REFUSAL.format(model="the model"))
    def new_forward(self, module: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            self.slot.in_call += 1
            try:
                call = self._begin(args, kwargs)
                output = call.replacement if call.replacement is not None else self._forward(*args, **kwargs)
                return self._end(call, output)
            except BaseException:
                self._abort()
                raise
            finally:
                self.slot.in_call -= 1

    # -- one call, outside compiled code ----------------------------------------------------
    @torch.compiler.disable
    def _begin(self, args: tuple, kwargs: dict) -> _Call:
        """Plan the call; on a forecast step, shut the gate with the forecast in the call slot."""
        call = self._plan(args, kwargs)
        call.args, call.kwargs = args, kwargs
        if call.prediction is None and self.residuals is not None:
            self.residuals.before_compute(call.generation, call.step, call.arguments if call.arguments is not None
                                          else self._arguments(args, kwargs))
        slot = self.slot
        slot.active = call.trajectory is not None and not self.config.forecast_output
        if slot.active and call.prediction is not None and call.trajectory is not None:
            slot.prediction = call.prediction
            slot.head_predictions = unjoin_heads(call.prediction, call.trajectory.head_layout, slot.num_heads)
            slot.stand_in_outputs = call.trajectory.stand_in_outputs or slot.stand_in_outputs
            slot.stand_in_used = [0] * slot.num_stand_ins
            self.gate.close()
        return call

    def _forward(self, *args: Any, **kwargs: Any) -> Any:
        """The denoiser's own forward (under Spectrum's hook, above the hooks registered before it)."""
        forward = self.fn_ref.original_forward
        assert forward is not None  # set by diffusers when the hook was registered
        return forward(*args, **kwargs)

    @torch.compiler.disable
    def _end(self, call: _Call, output: Any) -> Any:
        """Open the gate (running the network after all where the forecast could not be used), record."""
        if self.gate.shut:
            self.gate.open()
            if self.slot.unforecast_head or not any(f is not None for f in self.slot.features):
                self._warn("head", "the output head was not called, or a head the forecast does not cover "
                           "was; running the network.")
                call.prediction = None
                if self.residuals is not None:
                    self.residuals.before_compute(call.generation, call.step, call.arguments)
                self.slot.clear()
                self.slot.active = True
                output = self._forward(*call.args, **(call.kwargs or {}))
        if call.trajectory is not None:
            self._record(call, output)
        if call.final and self.residuals is not None:
            self.residuals.release(call.generation)
        self.slot.clear()
        return output

    @torch.compiler.disable
    def _abort(self) -> None:
        """The call raised (out of memory, an interrupt, a bad input): its generation is over, since a
        pipeline does not go on after its denoiser raised. Free its tensors now (on a GPU, gigabytes the
        user wants back after an out-of-memory error); its report stays."""
        self.gate.open()
        self.slot.clear()
        if self.residuals is not None:
            self.residuals.release(self.generations.current())
        self.generations.end()

    # -- planning -----------------------------------------------------------------------------
    def _plan(self, args: tuple, kwargs: dict) -> _Call:
        """Place the call, plan it, and on a forecast step make the forecast; a bare ``_Call`` runs the network."""
        if torch.is_grad_enabled():
            self._warn("grad", "gradients are enabled, so Spectrum runs the network; "
                       "sample under torch.no_grad() or torch.inference_mode() to forecast.")
            return _Call()
        arguments = self._arguments(args, kwargs)
        fields = self.contexts.step_fields()
        try:
            generation = self.generations.ongoing(fields, self.contexts.name())
            name = self._branch_name(generation)
            placement = self.generations.place(generation, name, arguments.get(self.timestep_arg), fields)
        except Unplaced as unplaced:
            if unplaced.message:
                self._warn(unplaced.kind, unplaced.message)
            return _Call()
        generation = placement.generation
        self._check_alone(generation)
        self._check_skipped_hooks(generation)
        extras = self._extras(arguments, generation, placement.step)
        latents = _latents(arguments)
        batch = int(latents.shape[0]) if latents is not None else None
        if generation.uses_cfg is None and self.config.guidance_forecast == "paired" and latents is not None:
            generation.uses_cfg = stacked_twice(generation, latents)
        decision = plan(generation, placement.name, placement.step, placement.slot, input_key(arguments), batch,
                        bool(extras))
        if decision.note:
            self._warn("pairing", decision.note)
        compute = _Call(decision.step, decision.trajectory, final=decision.final, arguments=arguments,
                        generation=generation, branch=placement.name, slot=placement.slot, batch=batch)
        return self._forecast(compute) if decision.forecast else compute

    def _extras(self, arguments: dict[str, Any], generation: Generation, step: int) -> list[str]:
        """The call's per-step extra inputs that make it run the network (said once)."""
        extras = self._extra_inputs(arguments)
        if extras and self.residuals is not None:  # a ControlNet's residuals: only the skipped blocks read them
            extras = self.residuals.claim(extras, generation, step)
        if extras:
            self._warn("extras", f"per-step inputs {extras} reach the denoiser; Spectrum runs every step."
                       + controlnet_hint(self.module, extras, self.residuals is not None))
        return extras

    def _forecast(self, compute: _Call) -> _Call:
        """The call with its forecast (the head's input, or the whole output), or ``compute`` where it is unusable."""
        trajectory, step = compute.trajectory, compute.step
        assert trajectory is not None
        forecaster = trajectory.forecaster
        prediction = forecaster.predict(step)
        if getattr(forecaster, "ridge_jitter", 0.0) > 0:
            self._warn(
                "jitter",
                f"the ridge system of the Chebyshev fit was singular and needed diagonal jitter (degree="
                f"{self.config.degree}, ridge_lambda={self.config.ridge_lambda:g}, {forecaster.num_recorded} recorded "
                "steps): the forecast rests on the jitter, not the data. Lower degree or raise ridge_lambda.",
            )
        # On the CPU the check is free; on an accelerator it would stall the host every forecast step.
        # There a forecast can only be non-finite if a recorded feature was, which the generation's end reports.
        if self._checks_now(prediction) and not all_finite(prediction):
            self._warn("nonfinite", f"non-finite forecast at step {step}; running the network.")
            return compute
        if self.config.forecast_output:
            return dataclasses.replace(compute, prediction=prediction,
                                       replacement=rebuild_output(trajectory.output_layout, prediction))
        return dataclasses.replace(compute, prediction=prediction)

    def _branch_name(self, generation: Generation) -> str:
        """The call's branch: its cache_context, else the prediction a modular pipeline's guider prepares.
        A call the guider did not prepare (its state unchanged since the last call it named: Wan Animate 2's
        reference pass before a segment's steps) is not one of its branches."""
        name = self.contexts.name()
        guider = generation.source.guider
        if guider is not None and not self.contexts.has_context():
            found, mark = guider_branch(guider), guider_mark(guider)
            if found is not None and mark != getattr(self._calls, "guider_mark", None) and _guider_on_step(
                    guider, generation):
                self._calls.guider_mark = mark  # across generations: a reference pass comes before the first step
                return branch_name(found)
        return name

    def will_forecast(self, timestep: Any) -> tuple[Generation, int] | None:
        """(generation, step) if this thread's next call of the denoiser, made now with ``timestep``, would
        forecast; None where it would compute or that cannot be told. It counts no call; a clock that goes by
        timestep values notes this one, as the denoiser call that follows with the same timestep would. The
        ControlNet, called first in each step, asks it (controlnet.py)."""
        with self._lock:
            if torch.is_grad_enabled() or self.contexts.step_fields() is not None:
                return None
            generation = self.generations.current()
            # Not where the guider names the branches: its count moves with the denoiser's call, not before it.
            if generation is None or generation.source.guider is not None or not generation.clock.still_running():
                return None
            name = self.contexts.name()
            try:
                step = generation.clock.place(name, timestep, None)
            except Unplaced:
                return None
            branch = generation.branches.get(name)
            if step is None or branch is None:
                return None
            trajectory = branch.trajectories.get(branch.calls_in_step if branch.step == step else 0)
            return (generation, step) if forecasts(generation, trajectory, step) else None


    def _check_alone(self, generation: Generation) -> None:
        """Once per generation: refuse a cache stacked on Spectrum after it was enabled (one that wraps
        the forward from outside, or hooks inside it); see compat.other_cache."""
        if self._alone_checked is not None and self._alone_checked() is generation:
            return
        self._alone_checked = weakref.ref(generation)
        other = other_cache(self.module)
        if other is not None:
            raise RuntimeError(self._stacked(other))

    def _stacked(self, other: str) -> str:
        name = type(self.module).__name__
        return (f"{name} has Spectrum enabled and another cache on top of it, {other}: the two cannot be stacked "
                f"(each skips work the other plans around). Remove that cache, or call "
                f"spectrum_cache.disable_spectrum before enabling it.")

    @torch.compiler.disable
    def _bypassed(self) -> None:
        """A head ran outside any call of this hook: the denoiser's forward no longer goes through Spectrum."""
        other = other_cache(self.module) or "another library that replaced its forward after enable_spectrum"
        raise RuntimeError(self._stacked(other) + " (Spectrum would never run.)")

    def _check_skipped_hooks(self, generation: Generation) -> None:
        """Once per generation: say which other hooks sit on modules that forecast steps skip."""
        if self.layout is None or (self._hooks_checked is not None and self._hooks_checked() is generation):
            return
        self._hooks_checked = weakref.ref(generation)
        found = [(module, hooks) for module in self.layout.skipped_modules()
                 if (hooks := foreign_hooks(module, SPECTRUM_HOOKS))]
        if not found:
            return
        names = {id(m): n for n, m in self.module.named_modules()}
        for module, hooks in found:
            path = names.get(id(module), type(module).__name__)
            self._warn(f"hook:{path}", f"{path} has hooks of its own ({', '.join(hooks)}), and forecast steps skip "
                       "it: they run only on compute steps. Hook a module that always runs (the output head), or "
                       "expect them to see fewer calls.")

    # -- recording ----------------------------------------------------------------------------
    def _record(self, call: _Call, output: Any) -> None:
        """Note the call in its trajectory; on a compute step, record the feature the network made."""
        trajectory = call.trajectory
        assert trajectory is not None  # only placed calls are recorded
        if call.prediction is None:
            feature, head_layout = self._feature(trajectory, output)
            if feature is not None:
                self._restart_if_reshaped(call, trajectory, feature, head_layout)
                self._update(call, trajectory, feature)
                trajectory.peak_bytes = max(trajectory.peak_bytes, trajectory.forecaster.nbytes)
        (trajectory.forecast if call.prediction is not None else trajectory.computed).append(call.step)
        if call.final:
            trajectory.forecaster.reset()  # the trajectory is complete: free its tensors
            trajectory.stand_in_outputs = None

    def _feature(self, trajectory: Trajectory, output: Any) -> tuple[torch.Tensor | None, tuple | None]:
        """The feature a compute call made (the heads' inputs, or the output itself), and how it joins the heads."""
        if self.config.forecast_output:
            split = split_output(output)
            if split is None:
                self._warn("output", f"the denoiser returned {type(output).__name__}, which Spectrum cannot "
                           "forecast (it needs tensors of one dtype); running the network on every step.")
                return None, None
            feature, trajectory.output_layout = split
            return feature, None
        if any(f is not None for f in self.slot.features):
            trajectory.keep_stand_in_outputs(self.slot.stand_in_outputs)
            return join_heads(self.slot.features)
        self._warn("head", "the output head was not called; nothing recorded.")
        return None, None

    def _restart_if_reshaped(self, call: _Call, trajectory: Trajectory, feature: torch.Tensor,
                             head_layout: tuple | None) -> None:
        """The head's input changed shape within the trajectory (Qwen-Image 2.1's KV-cache prefill step sees the
        prefix and target tokens, later steps the target's only), or other heads were called: forecast from the
        new records, as planning does when the inputs change shape."""
        shape = getattr(trajectory.forecaster, "feature_shape", None)
        moved = not self.config.forecast_output and trajectory.head_layout not in (None, head_layout)
        if not self.config.forecast_output:
            trajectory.head_layout = head_layout
        if (shape is not None and feature.shape != shape) or moved:
            trajectory.forecaster.reset()
            # A fresh forecaster as for a new trajectory: a paired branch gets a new pair, since its partner's
            # records have the old shape too.
            if call.generation is not None:
                trajectory.forecaster, _ = forecaster_for(call.generation, call.branch, call.slot, call.batch)

    def _update(self, call: _Call, trajectory: Trajectory, feature: torch.Tensor) -> None:
        """Record ``feature`` at the call's step (after its shadow error), and hand it to the listeners."""
        forecaster = trajectory.forecaster
        if trajectory.forecast and forecaster.num_recorded and forecaster.feature_shape == feature.shape:
            trajectory.note_shadow(call.step, forecaster.predict(call.step), feature)
        on_host = self._checks_now(feature)
        try:
            forecaster.update(call.step, feature, check_finite=on_host)
        except ValueError as error:
            self._warn("record", f"not recorded: {error}")
            return
        if not on_host:
            trajectory.note_finite(feature)
            trajectory.held_exactly = getattr(forecaster, "held_exactly", None)
        listeners = tuple(self._listeners)  # listen() may change the list from another thread
        if listeners and call.generation is not None:
            label = call.branch if call.slot == 0 else f"{call.branch}[{call.slot}]"
            for listener in listeners:
                listener(call.generation, label, call.step, feature)

    @contextlib.contextmanager
    def listen(self, listener: Callable[[Generation, str, int, torch.Tensor], None]) -> Iterator[None]:
        """For the length of the ``with`` block, call ``listener(generation, branch label, step, feature)``
        with each feature a compute step records (in the thread that made the call, under this hook's lock)."""
        self._listeners.append(listener)
        try:
            yield
        finally:
            self._listeners.remove(listener)

    def _checks_now(self, tensor: torch.Tensor) -> bool:
        """Whether finiteness is checked per call. Not under context parallelism: each rank holds a slice,
        and a decision one rank took alone (run the network here) would stall the others in their
        collectives; there, as on an accelerator, it is checked once per trajectory."""
        return checks_on_host(tensor) and not context_parallel(self.module)

    def _warn(self, kind: str, message: str) -> None:
        if kind not in self._warned:
            self._warned.add(kind)
            warnings.warn(f"{self.denoiser_name}: {message}", SpectrumWarning, stacklevel=2)

    # -- reporting ----------------------------------------------------------------------------
    def summaries(self, pipeline: Any = None) -> list[BranchSummary]:
        with self._lock:
            return self.generations.summaries(pipeline)


def _guider_on_step(guider: Any, generation: Generation) -> bool:
    """Whether the guider's step is the loop's (a guider left on an earlier run's last step is not)."""
    step, loop_step = guider_step(guider), generation.clock.loop_step()
    return step is None or loop_step is None or step == loop_step


def checks_on_host(tensor: torch.Tensor) -> bool:
    """Whether finiteness checks on ``tensor`` run at once: on the CPU they cost nothing extra; on an
    accelerator each would make the host wait for the device."""
    return tensor.device.type == "cpu"


def _latents(arguments: dict[str, Any]) -> torch.Tensor | None:
    """The call's latents: its first tensor argument with a batch dimension."""
    return next((v for v in arguments.values() if isinstance(v, torch.Tensor) and v.ndim > 0), None)

