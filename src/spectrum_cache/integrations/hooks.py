"""diffusers hooks that run Spectrum on one denoiser.

``SpectrumHook`` sits on the denoiser. Per call it works out the branch (diffusers' ``cache_context``),
the step and whether the network runs. On a forecast step it swaps the model's block lists for empty
ones, and the embedders that only feed them (the adapter's ``input_paths``) for pass-throughs, for
the length of the call, so the model's own forward runs its time embedding and output head and
nothing else, and ``HeadHook`` swaps the head's input for the forecast. On a compute step ``HeadHook``
hands the head's input back to be recorded. Modules whose output is a function of one unchanging
argument (the adapter's ``constant_paths``, the pooled-text projection) run once per trajectory on
forecast steps; later forecast steps read their output from the call slot.

Where the state lives. The hooks hold configuration only. The state of a generation is a
``Generation`` (generation.py) owned by the thread running it, and the call in flight is one
``CallSlot``; calls into one denoiser from several threads take turns (a lock per denoiser; on one
GPU stream they would be serialised anyway). A generation follows the scheduler of the pipeline that
is running: the nearest caller frame whose ``self`` is a ``DiffusionPipeline`` holding this denoiser
(so ``from_pipe`` siblings with their own scheduler, and pipelines built around another's transformer,
get their own step count). Outside any pipeline call it is the scheduler given to ``enable_spectrum``,
the enabling pipeline's, or the configured ``num_inference_steps``.

torch.compile. The bookkeeping runs outside the graph (``torch.compiler.disable``), so a compiled
model sees a call as either "all blocks" or "no blocks, head input given": two graphs, no
per-timestep recompiles. With regional compilation (``compile_repeated_blocks``) the compiled blocks
see no Spectrum code at all.

accelerate. Model and sequential CPU offload wrap ``module.forward`` and keep the forward they
wrapped in ``module._old_forward``, which they put back when they remove their hook (diffusers does
that after every pipeline call). ``register_hook`` / ``remove_hook`` therefore put Spectrum's hooks
under accelerate's, into ``_old_forward``, so both survive either order.
"""

from __future__ import annotations

import contextlib
import inspect
import pickle
import sys
import threading
import warnings
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from diffusers import DiffusionPipeline
from diffusers.hooks.hooks import BaseState, HookRegistry, ModelHook, StateManager
from diffusers.utils.torch_utils import unwrap_module

from ..config import SpectrumConfig
from ..forecast import all_finite
from .adapters import DENOISER_COMPONENTS, ResolvedAdapter, TimestepRange, has_extra_inputs, steps_run_by
from .generation import BareClock, BranchState, Generation, SchedulerClock, Trajectory, Unplaced
from .outputs import input_key, rebuild_output, split_output
from .summary import BranchSummary

DENOISER_HOOK = "spectrum_cache"
HEAD_HOOK = "spectrum_cache_head"
DEFAULT_BRANCH = "default"
# How far up the stack a denoiser call looks for the pipeline running it (hooks, accelerate and
# torch.compile add a few frames between the pipeline's __call__ and the hook).
_MAX_CALLER_FRAMES = 48
# More calls than this on one step of one branch (Heun with two unnamed CFG calls makes 4) means the
# scheduler's step_index is not advancing: a hand-written loop that never calls scheduler.step().
_MAX_CALLS_PER_STEP = 8


class SpectrumWarning(UserWarning):
    """Spectrum ran the network where it would have forecast, and says why."""


# -- hooks under accelerate's ------------------------------------------------------------------
@contextlib.contextmanager
def _under_accelerate(module: torch.nn.Module) -> Iterator[None]:
    """While inside, ``module.forward`` is the forward accelerate wraps (if it wraps one)."""
    if not (hasattr(module, "_hf_hook") and hasattr(module, "_old_forward")):
        yield
        return
    outer = module.forward
    module.forward = module._old_forward
    try:
        yield
    finally:
        module._old_forward = module.forward
        module.forward = outer


def register_hook(module: torch.nn.Module, hook: ModelHook, name: str) -> None:
    with _under_accelerate(module):
        HookRegistry.check_if_exists_or_initialize(module).register_hook(hook, name)


def remove_hook(module: torch.nn.Module, name: str) -> None:
    registry = getattr(module, "_diffusers_hook", None)
    if registry is not None and name in registry.hooks:
        with _under_accelerate(module):
            registry.remove_hook(name, recurse=False)


# -- state shared by the hooks ---------------------------------------------------------------------
class BranchContexts(StateManager):
    """The ``cache_context`` name per thread (``default`` outside any context: pipelines that batch
    cond and uncond into one call, like SDXL, set none). diffusers finds it among the hook's
    attributes and sets it when a pipeline enters ``cache_context``."""

    def __init__(self) -> None:
        super().__init__(BaseState)
        self._names: dict[int, str] = {}

    def set_context(self, context: Any) -> None:
        if context is None:
            self._names.pop(threading.get_ident(), None)
        else:
            self._names[threading.get_ident()] = context.name

    def name(self) -> str:
        return self._names.get(threading.get_ident(), DEFAULT_BRANCH)

    def reset(self, *args: Any, **kwargs: Any) -> None:
        self._names.pop(threading.get_ident(), None)


class CallSlot:
    """The denoiser call in flight, as the head hook sees it (written outside compiled code)."""

    def __init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        self.active = False  # this call records or forecasts
        self.prediction: torch.Tensor | None = None  # the head's input on a forecast step
        self.feature: torch.Tensor | None = None  # the head's input on a compute step
        self.head_seen = False
        self.constants: list[torch.Tensor | None] = []  # forecast steps: the constant modules' outputs


@dataclass
class _Call:
    """What one denoiser call does; ``trajectory`` None means it just runs the network."""

    step: int = -1
    trajectory: Trajectory | None = None
    prediction: torch.Tensor | None = None  # set on forecast steps
    replacement: Any = None  # forecast_output mode: the denoiser output to return instead
    final: bool = False  # the generation's last step: the trajectory is complete after it
    constants: list[torch.Tensor | None] | None = None  # forecast steps: outputs of the constant modules
    args: tuple = ()
    kwargs: dict | None = None


class _Unpicklable:
    """Spectrum's hooks live in diffusers' HookRegistry, whose forward wrappers cannot be pickled: say
    so by name. A deepcopy of a hook is an inert placeholder; ``api`` re-enables Spectrum on a copy."""

    def __reduce_ex__(self, protocol: object) -> Any:
        raise pickle.PicklingError(
            "a module with Spectrum enabled cannot be pickled (diffusers' hook wrappers are local functions): "
            "call spectrum_cache.disable_spectrum(model) before pickle or torch.save, or save the weights with "
            "save_pretrained() or state_dict(), which work while Spectrum is enabled."
        )

    def __deepcopy__(self, memo: dict) -> ModelHook:
        return ModelHook()


# -- the hooks -----------------------------------------------------------------------------------
class SpectrumHook(_Unpicklable, ModelHook):
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
        self.pipeline_ref = weakref.ref(pipeline) if pipeline is not None else None
        self.scheduler = scheduler
        self.contexts = BranchContexts()
        self.slot = CallSlot()
        # Stand-ins swapped in for the blocks on forecast steps: one object per slot for the hook's
        # lifetime, so a compiled model sees the same two module layouts every time.
        self.stand_ins = [
            (parent, name, torch.nn.ModuleList() if isinstance(parent._modules[name], torch.nn.ModuleList) else _FirstInput())
            for parent, name in (layout.block_slots if layout is not None else ())
        ] + [(parent, name, _FirstInput()) for parent, name in (layout.input_slots if layout is not None else ())]
        self.constant_stand_ins = [
            (parent, name, argument, _SlotConstant(self.slot, index))
            for index, (parent, name, argument) in enumerate(layout.constant_slots if layout is not None else ())
        ]
        self._swapped: list[tuple[torch.nn.Module, str, torch.nn.Module]] = []
        self._lock = threading.RLock()
        self._generations: dict[int, Generation] = {}  # per thread
        self._reports: dict[int, tuple[weakref.ref | None, list[BranchSummary]]] = {}  # per pipeline id
        self._last_report: list[BranchSummary] = []
        self._spent_token: weakref.ref | None = None  # the timesteps of the last generation that ended
        self._warned: set[str] = set()

    # -- diffusers hook interface -------------------------------------------------------------
    def initialize_hook(self, module: torch.nn.Module) -> torch.nn.Module:
        self.module = module
        signature = inspect.signature(type(module).forward)
        self._signature = signature.replace(parameters=list(signature.parameters.values())[1:])
        return module

    def reset_state(self, module: torch.nn.Module) -> torch.nn.Module:
        # Pipelines reset stateful hooks after every call (maybe_free_model_hooks), in the thread that ran
        # it: that thread's generation is over. Other threads' generations go on.
        with self._lock:
            self._end_generation(threading.get_ident())
        self.contexts.reset()
        return module

    # Not traced by torch.compile, but what it calls is: the model's forward becomes a frame of its own,
    # compiled in one piece (a graph break here would make dynamo trace the whole model twice).
    @torch.compiler.disable(recursive=False)
    def new_forward(self, module: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        call = self._begin(args, kwargs)
        done = False
        try:
            if call.replacement is not None:
                output = call.replacement
            else:
                output = self.fn_ref.original_forward(*args, **kwargs)
            done = True
        finally:
            if not done:
                self._abort()
        return self._end(call, output)

    # -- one call, outside compiled code ----------------------------------------------------
    @torch.compiler.disable
    def _begin(self, args: tuple, kwargs: dict) -> _Call:
        self._lock.acquire()
        try:
            call = self._plan(args, kwargs)
            call.args, call.kwargs = args, kwargs
            self.slot.active = call.trajectory is not None and not self.config.forecast_output
            self.slot.prediction = call.prediction if self.slot.active else None
            if self.slot.prediction is not None:
                self._swap_blocks()
                self._swap_constants(call.constants or [])
            return call
        except BaseException:
            self._abort()
            raise

    @torch.compiler.disable
    def _end(self, call: _Call, output: Any) -> Any:
        try:
            if self._swapped:
                self._restore_blocks()
                if not self.slot.head_seen:
                    self._warn("head", "the output head was not called; running the network.")
                    self.slot.prediction, call.prediction = None, None
                    output = self.fn_ref.original_forward(*call.args, **call.kwargs)
            if call.trajectory is not None:
                self._record(call, output)
            return output
        finally:
            self.slot.clear()
            self._lock.release()

    @torch.compiler.disable
    def _abort(self) -> None:
        self._restore_blocks()
        self.slot.clear()
        self._lock.release()

    def _swap(self, parent: torch.nn.Module, name: str, stand_in: torch.nn.Module) -> None:
        self._swapped.append((parent, name, parent._modules[name]))
        parent._modules[name] = stand_in

    def _swap_blocks(self) -> None:
        for parent, name, stand_in in self.stand_ins:
            self._swap(parent, name, stand_in)

    def _swap_constants(self, values: list[torch.Tensor | None]) -> None:
        self.slot.constants = values
        for (parent, name, _, stand_in), value in zip(self.constant_stand_ins, values):
            if value is not None:
                self._swap(parent, name, stand_in)

    def _restore_blocks(self) -> None:
        while self._swapped:
            parent, name, block = self._swapped.pop()
            parent._modules[name] = block

    # -- planning -----------------------------------------------------------------------------
    def _plan(self, args: tuple, kwargs: dict) -> _Call:
        if torch.is_grad_enabled():
            self._warn("grad", "gradients are enabled, so Spectrum runs the network; "
                       "sample under torch.no_grad() or torch.inference_mode() to forecast.")
            return _Call()
        arguments = self._arguments(args, kwargs)
        try:
            generation = self._generation()
            branch, step, slot = self._place(generation, arguments)
        except Unplaced as unplaced:
            if unplaced.message:
                self._warn(unplaced.kind, unplaced.message)
            return _Call()

        key = input_key(arguments)
        trajectory = branch.trajectories.get(slot)
        if trajectory is not None and trajectory.input_key != key:
            # New input shapes (another resolution or batch): start over, keep the old one's record.
            trajectory.forecaster.reset()
            branch.retired.append((slot, trajectory))
            trajectory = None
        if trajectory is None:
            forecaster, note = generation.forecaster_for(self.contexts.name(), slot, _batch_size(arguments))
            if note:
                self._warn("pairing", note)
            trajectory = Trajectory(forecaster, key, first_step=step)
            branch.trajectories[slot] = trajectory

        compute = _Call(step, trajectory, final=step == generation.num_steps - 1)
        extras = has_extra_inputs(arguments)
        if extras:
            self._warn("extras", f"per-step inputs {extras} reach the denoiser; Spectrum runs every step.")
        if step in generation.compute_steps or extras or trajectory.forecaster.num_recorded == 0:
            return compute
        if self.config.forecast_output and trajectory.output_layout is None:
            return compute
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
        # There a forecast can only be non-finite if a recorded feature was, which _record catches.
        if checks_on_host(prediction) and not all_finite(prediction):
            self._warn("nonfinite", f"non-finite forecast at step {step}; running the network.")
            return compute
        if self.config.forecast_output:
            return _Call(step, trajectory, prediction, rebuild_output(trajectory.output_layout, prediction), compute.final)
        return _Call(step, trajectory, prediction, None, compute.final, constants=self._constants(trajectory, arguments))

    def _constants(self, trajectory: Trajectory, arguments: dict[str, Any]) -> list[torch.Tensor | None]:
        """The outputs of the adapter's constant modules for this forecast call, computed once per
        trajectory and reused while the call passes the same unmodified argument; None runs the module."""
        values: list[torch.Tensor | None] = []
        for index, (parent, name, argument, _) in enumerate(self.constant_stand_ins):
            value = arguments.get(argument)
            values.append(self._constant(trajectory, index, parent._modules[name], value))
        return values

    @staticmethod
    def _constant(trajectory: Trajectory, index: int, module: torch.nn.Module, value: Any) -> torch.Tensor | None:
        # Inference-mode tensors keep no version counter, so a change in place could not be seen.
        if not isinstance(value, torch.Tensor) or value.is_inference():
            return None
        # Weights elsewhere than the input (offloaded, with a hook that loads them later in the call) are
        # left to the model's own call.
        weight = next(module.parameters(), None)
        if weight is not None and weight.device != value.device:
            return None
        memo = trajectory.constants.get(index)
        if memo is not None:
            source, version, output, output_version = memo
            if source is value and value._version == version and output._version == output_version:
                return output
        output = module(value)
        if not isinstance(output, torch.Tensor) or output.is_inference():
            return None
        trajectory.constants[index] = (value, value._version, output, output._version)
        return output

    def _arguments(self, args: tuple, kwargs: dict) -> dict[str, Any]:
        bound = self._signature.bind_partial(*args, **kwargs).arguments
        for name, parameter in self._signature.parameters.items():
            if parameter.kind is inspect.Parameter.VAR_KEYWORD and name in bound:
                bound = {**bound, **bound.pop(name)}
        return bound

    def _generation(self) -> Generation:
        """This thread's generation, a new one when the running pipeline or its timesteps changed."""
        thread = threading.get_ident()
        current = self._generations.get(thread)
        pipeline, scheduler, component, call_locals = self._step_source()
        if scheduler is None:
            if current is None or not isinstance(current.clock, BareClock):
                current = self._start(thread, BareClock(self.config.num_inference_steps), None)
            return current
        clock = current.clock if current is not None else None
        if isinstance(clock, SchedulerClock) and clock.scheduler is scheduler and clock.token is scheduler.timesteps:
            if current.pipeline is pipeline:
                return current
        if getattr(scheduler, "timesteps", None) is None:
            raise Unplaced("no-timesteps", f"the scheduler {type(scheduler).__name__} has no timesteps yet "
                           "(set_timesteps was not called), so the step count is unknown; running the network.")
        if self._spent_token is not None and self._spent_token() is scheduler.timesteps:
            # Every pipeline call sets new timesteps: these belong to a generation that is over, so this
            # call is not part of a run of that scheduler.
            raise Unplaced("stale", f"{type(scheduler).__name__}'s timesteps are those of a finished generation "
                           "(set_timesteps was not called for this one), so the step count is unknown; running "
                           "the network. Call the pipeline, or set_timesteps before a hand-written loop.")
        steps_run = steps_run_by(pipeline, component) if pipeline is not None else TimestepRange()
        clock = SchedulerClock(scheduler, steps_run)
        wanted = self.config.num_inference_steps
        if wanted is not None and wanted != clock.num_steps and steps_run == TimestepRange():
            self._warn("count", f"SpectrumConfig.num_inference_steps={wanted} but the pipeline runs "
                       f"{clock.num_steps} steps; the schedule follows the pipeline.")
        # Whether the call runs CFG is read once per generation, from the running pipeline's call only.
        uses_cfg = _uses_cfg(pipeline, call_locals) if call_locals is not None else None
        return self._start(thread, clock, pipeline, uses_cfg)

    def _step_source(self) -> tuple[Any, Any, str | None, dict[str, Any] | None]:
        """(pipeline, scheduler, component name, the running pipeline call's locals) that set this call's
        step count; no scheduler means the configured num_inference_steps, no locals a call that does not
        come from a running pipeline."""
        pipeline, component, call_locals = running_pipeline(self.module)
        if pipeline is not None:
            if getattr(pipeline, "scheduler", None) is None:
                raise Unplaced("no-scheduler", f"{type(pipeline).__name__} has no scheduler, so the step count is "
                               "unknown; running the network.")
            return pipeline, pipeline.scheduler, component, call_locals
        if self.scheduler is not None:
            return None, self.scheduler, None, None
        if self.pipeline_ref is not None:
            pipeline = self.pipeline_ref()
            if pipeline is None:
                raise Unplaced(
                    "gone",
                    "the pipeline Spectrum was enabled on no longer exists and this call does not come from a "
                    "pipeline, so the step count is unknown; running the network. Enable Spectrum on the pipeline "
                    "you run, or on the bare denoiser with scheduler=... or num_inference_steps.",
                )
            return pipeline, pipeline.scheduler, self.denoiser_name, None
        return None, None, None, None

    def _start(self, thread: int, clock: SchedulerClock | BareClock, pipeline: Any,
               uses_cfg: bool | None = None) -> Generation:
        self._end_generation(thread)
        alive = {t.ident for t in threading.enumerate()}
        for gone in [t for t in self._generations if t not in alive]:
            self._end_generation(gone)
        generation = Generation(self.config, self.denoiser_name, clock, pipeline, uses_cfg)
        self._generations[thread] = generation
        if generation.time_axis_note:
            self._warn("time-axis", generation.time_axis_note)
        return generation

    def _end_generation(self, thread: int) -> None:
        generation = self._generations.pop(thread, None)
        if generation is None:
            return
        generation.close()
        if isinstance(generation.clock, SchedulerClock):
            self._spent_token = weakref.ref(generation.clock.token)
        report = generation.summaries()
        if report:
            pipeline = generation.pipeline
            ref = weakref.ref(pipeline) if pipeline is not None else None
            self._reports[id(pipeline)] = (ref, report)
            self._last_report = report
        self._reports = {k: v for k, v in self._reports.items() if v[0] is None or v[0]() is not None}

    def _place(self, generation: Generation, arguments: dict[str, Any]) -> tuple[BranchState, int, int]:
        """(branch, step, slot) of this call; raises Unplaced where the network just runs."""
        name = self.contexts.name()
        branch = generation.branch(name)
        timestep = arguments.get(self.timestep_arg)
        if isinstance(generation.clock, BareClock):
            step = generation.clock.place(branch, timestep)
            if step is None:  # the timesteps started over: a new generation
                generation = self._start(threading.get_ident(), BareClock(generation.num_steps), None)
                branch = generation.branch(name)
                step = generation.clock.place(branch, timestep)
        elif generation.num_steps is None:
            raise Unplaced("unplanned", "the pipeline runs no step on this denoiser by its scheduler's timesteps; "
                           "running the network.")
        else:
            step = generation.clock.place(name, timestep)
        if step != branch.step:
            branch.step, branch.calls_in_step = step, 0
        slot = branch.calls_in_step
        branch.calls_in_step += 1
        if slot >= _MAX_CALLS_PER_STEP:
            raise Unplaced(
                "stuck",
                f"more than {_MAX_CALLS_PER_STEP} calls landed on step {step}: the scheduler's step_index does not "
                "advance (call scheduler.step() after each step); running the network.",
            )
        if step >= generation.num_steps:
            raise Unplaced(
                "past-end",
                f"the denoiser ran past SpectrumConfig.num_inference_steps={generation.num_steps} without the "
                "timesteps starting over; the network runs on every extra step. Set num_inference_steps to the "
                "loop's length.",
            )
        return branch, step, slot

    # -- recording ----------------------------------------------------------------------------
    def _record(self, call: _Call, output: Any) -> None:
        trajectory = call.trajectory
        if call.prediction is None:
            feature = None
            if self.config.forecast_output:
                split = split_output(output)
                if split is None:
                    self._warn("output", f"the denoiser returned {type(output).__name__}, which Spectrum cannot "
                               "forecast (it needs tensors of one dtype); running the network on every step.")
                else:
                    feature, trajectory.output_layout = split
            elif self.slot.head_seen:
                feature = self.slot.feature
            else:
                self._warn("head", "the output head was not called; nothing recorded.")
            if feature is not None:
                on_host = checks_on_host(feature)
                try:
                    trajectory.forecaster.update(call.step, feature, check_finite=on_host)
                except ValueError as error:
                    self._warn("record", f"not recorded: {error}")
                else:
                    if not on_host:
                        trajectory.note_finite(feature)
                trajectory.peak_bytes = max(trajectory.peak_bytes, trajectory.forecaster.nbytes)
        (trajectory.forecast if call.prediction is not None else trajectory.computed).append(call.step)
        if call.final:
            if trajectory.finite is not None and not bool(trajectory.finite):  # one sync per trajectory
                self._warn("nonfinite", "the network produced NaN or Inf features in this generation, and the "
                           "forecasts made from them are not finite either.")
            trajectory.forecaster.reset()  # the trajectory is complete: free its tensors

    def _warn(self, kind: str, message: str) -> None:
        if kind not in self._warned:
            self._warned.add(kind)
            warnings.warn(f"{self.denoiser_name}: {message}", SpectrumWarning, stacklevel=2)

    # -- reporting ----------------------------------------------------------------------------
    def live_generation(self) -> Generation | None:
        """This thread's generation in progress, if any."""
        return self._generations.get(threading.get_ident())

    def summaries(self, pipeline: Any = None) -> list[BranchSummary]:
        """This thread's current generation if it belongs to ``pipeline`` (any, for None), else the
        last finished generation of ``pipeline`` (of any pipeline or loop, for None)."""
        with self._lock:
            live = self._generations.get(threading.get_ident())
            if live is not None and (pipeline is None or live.pipeline is pipeline):
                report = live.summaries()
                if report:
                    return report
            if pipeline is None:
                return self._last_report
            ref, report = self._reports.get(id(pipeline), (None, []))
            return report if ref is not None and ref() is pipeline else []


class HeadHook(_Unpicklable, ModelHook):
    """Hands the output head's input to the call slot on compute steps and replaces it on forecast
    steps. It runs inside a compiled model: it only reads and writes the slot."""

    def __init__(self, slot: CallSlot) -> None:
        super().__init__()
        self.slot = slot

    def pre_forward(self, module: torch.nn.Module, *args: Any, **kwargs: Any) -> tuple[tuple, dict]:
        slot = self.slot
        if not slot.active or slot.head_seen or not args or not isinstance(args[0], torch.Tensor):
            return args, kwargs
        slot.head_seen = True
        if slot.prediction is not None:
            return (slot.prediction, *args[1:]), kwargs
        slot.feature = args[0]
        return args, kwargs


def checks_on_host(tensor: torch.Tensor) -> bool:
    """Whether finiteness checks on ``tensor`` run at once: on the CPU they cost nothing extra; on an
    accelerator each would make the host wait for the device."""
    return tensor.device.type == "cpu"


def _batch_size(arguments: dict[str, Any]) -> int | None:
    """The batch of the call: the first dimension of its first tensor argument (the latents)."""
    first = next((v for v in arguments.values() if isinstance(v, torch.Tensor) and v.ndim > 0), None)
    return int(first.shape[0]) if first is not None else None


class _SlotConstant(torch.nn.Module):
    """Stands in for a constant module (the adapter's constant_paths) on forecast steps: returns the
    output the hook computed for this call, read from the call slot as the head's forecast is."""

    def __init__(self, slot: CallSlot, index: int) -> None:
        super().__init__()
        self.slot = slot
        self.index = index

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.slot.constants[self.index]


class _FirstInput(torch.nn.Module):
    """Stands in for a single skipped block (the SDXL UNet's mid_block) or an input embedder whose
    output only the skipped blocks would read: returns its first input."""

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return args[0] if args else next(iter(kwargs.values()))


# -- the running pipeline ----------------------------------------------------------------------
def running_pipeline(denoiser: torch.nn.Module) -> tuple[Any, str | None, dict[str, Any] | None]:
    """The pipeline whose call is running ``denoiser`` in this thread, the component name it has there
    (the nearest caller frame whose ``self`` is a DiffusionPipeline holding the denoiser), and that
    frame's locals (None where no pipeline is running)."""
    frame = sys._getframe(1)
    for _ in range(_MAX_CALLER_FRAMES):
        if frame is None:
            break
        code = frame.f_code
        if code.co_argcount and code.co_varnames[0] == "self":
            owner = frame.f_locals.get("self")
            if isinstance(owner, DiffusionPipeline):
                for name in DENOISER_COMPONENTS:
                    if unwrap_module(getattr(owner, name, None)) is denoiser:
                        return owner, name, frame.f_locals
        frame = frame.f_back
    return None, None, None


def _uses_cfg(pipeline: Any, call_locals: dict[str, Any]) -> bool | None:
    """The pipeline call's own decision to run CFG: its ``do_classifier_free_guidance`` local (PixArt,
    CogVideoX keep it there), else the property most pipelines define."""
    flag = call_locals.get("do_classifier_free_guidance")
    if isinstance(flag, bool):
        return flag
    try:
        flag = getattr(pipeline, "do_classifier_free_guidance", None)
    except Exception:  # a property reading state the call has not set
        return None
    return flag if isinstance(flag, bool) else None
