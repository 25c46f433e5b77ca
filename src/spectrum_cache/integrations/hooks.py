"""diffusers hooks that run Spectrum on one denoiser.

Per denoiser call, ``SpectrumDenoiserHook`` works out the branch (diffusers' ``cache_context``), the
step and whether the network runs. On a forecast step every block hook returns placeholders of the
right shapes without running its block, and the head hook swaps the head's input for the forecast;
embeddings and the head itself still run with the current timestep. On a compute step the head hook
records the head's input.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from diffusers.hooks.hooks import BaseState, ModelHook, StateManager

from ..config import SpectrumConfig
from ..forecast import FeatureForecaster, make_forecaster
from ..schedule import compute_steps
from .adapters import has_extra_inputs
from .summary import BranchSummary

DENOISER_HOOK = "spectrum_cache"
BLOCK_HOOK = "spectrum_cache_block"
HEAD_HOOK = "spectrum_cache_head"
DEFAULT_BRANCH = "default"


class SpectrumWarning(UserWarning):
    """Spectrum ran the network where it would have forecast, and says why."""


@dataclass
class Trajectory:
    """One feature trajectory: a branch's k-th denoiser call in each step (k > 0 for samplers that
    call the denoiser more than once per step, like Heun)."""

    forecaster: FeatureForecaster
    input_key: tuple
    computed: list[int] = field(default_factory=list)
    forecast: list[int] = field(default_factory=list)
    peak_bytes: int = 0
    output_kind: type | None = None  # forecast_output mode: how to rebuild the denoiser's output


class BranchState(BaseState):
    """The step clock and trajectories of one CFG branch in the current generation."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.step = -1
        self.first_timestep: float | None = None
        self.last_timestep: float | None = None
        self.calls_in_step = 0
        self.trajectories: dict[int, Trajectory] = {}


class BranchStates(StateManager):
    """Per-branch state keyed by the ``cache_context`` name, or ``default`` outside any context
    (pipelines that batch cond and uncond into one call, like SDXL, set no context)."""

    def __init__(self) -> None:
        super().__init__(BranchState)
        self.branch_name = DEFAULT_BRANCH
        self.branches: dict[str, BranchState] = {}

    def set_context(self, context: Any) -> None:
        super().set_context(context)
        self.branch_name = DEFAULT_BRANCH if context is None else context.name

    def get_state(self) -> BranchState:
        return self.branches.setdefault(self.branch_name, BranchState())

    def reset(self, *args: Any, **kwargs: Any) -> None:
        super().reset()
        self.branches.clear()
        self.branch_name = DEFAULT_BRANCH


class SchedulerSteps:
    """The current generation's step count, read from a pipeline's scheduler at run time.

    ``scheduler.timesteps`` is a new tensor after every ``set_timesteps``, so its identity marks a new
    generation. The steps that actually run are the distinct timesteps from ``begin_index`` on
    (img2img with strength < 1 starts later; Heun repeats each timestep), restricted to the ones this
    denoiser handles (``routes``, for Wan2.2's two experts).
    """

    def __init__(self, get_scheduler: Callable[[], Any], routes: Callable[[float], bool] | None = None) -> None:
        self.get_scheduler = get_scheduler
        self.routes = routes

    def token(self) -> object | None:
        return getattr(self.get_scheduler(), "timesteps", None)

    def num_steps(self) -> int:
        scheduler = self.get_scheduler()
        begin = getattr(scheduler, "begin_index", None) or 0
        timesteps = torch.unique_consecutive(scheduler.timesteps[begin:].detach().float().cpu()).tolist()
        if self.routes is not None:
            timesteps = [t for t in timesteps if self.routes(t)]
        return len(timesteps)


@dataclass
class _CallPlan:
    step: int
    trajectory: Trajectory | None
    prediction: torch.Tensor | None  # set on forecast steps
    head_seen: bool = False


class SpectrumDenoiserHook(ModelHook):
    """Decides per denoiser call whether the network runs, and holds the per-branch state."""

    _is_stateful = True

    def __init__(
        self,
        config: SpectrumConfig,
        denoiser_name: str,
        timestep_arg: str,
        steps: SchedulerSteps | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        self.denoiser_name = denoiser_name
        self.timestep_arg = timestep_arg
        self.steps = steps
        self.branches = BranchStates()
        self.block_hooks: list[BlockSkipHook] = []
        self.plan: _CallPlan | None = None
        self._generation_token: object | None = None
        self._num_steps: int | None = None
        self._compute_steps: frozenset[int] = frozenset()
        self._warned: set[str] = set()
        self._last_report: list[BranchSummary] = []

    # -- diffusers hook interface -------------------------------------------------------------
    def initialize_hook(self, module: torch.nn.Module) -> torch.nn.Module:
        self._signature = inspect.signature(module.forward)
        return module

    def reset_state(self, module: torch.nn.Module) -> torch.nn.Module:
        # Pipelines reset stateful hooks after every call (maybe_free_model_hooks): keep the report.
        self._last_report = self._live_report() or self._last_report
        self.branches.reset()
        self._generation_token = None
        self._num_steps = None
        self._compute_steps = frozenset()
        for hook in self.block_hooks:
            hook.templates.clear()
        return module

    def new_forward(self, module: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        forward = self.fn_ref.original_forward
        if torch.is_grad_enabled():
            self._warn("grad", f"{self.denoiser_name}: gradients are enabled, so Spectrum runs the network; "
                       "sample under torch.no_grad() or torch.inference_mode() to forecast.")
            return forward(*args, **kwargs)
        arguments = self._arguments(args, kwargs)
        plan = self._plan(arguments)
        if plan is None:
            return forward(*args, **kwargs)
        forecasting = plan.prediction is not None
        if self.config.forecast_output:
            return self._run_output_mode(plan, forward, args, kwargs)
        self.plan = plan
        try:
            output = forward(*args, **kwargs)
            if forecasting and not plan.head_seen:
                self._warn("head", f"{self.denoiser_name}: the output head was not called; running the network.")
                plan.prediction = None
                output = forward(*args, **kwargs)
            elif not forecasting and not plan.head_seen and plan.trajectory is not None:
                self._warn("head", f"{self.denoiser_name}: the output head was not called; nothing recorded.")
        finally:
            self.plan = None
        self._finish(plan)
        return output

    # -- planning -----------------------------------------------------------------------------
    def _arguments(self, args: tuple, kwargs: dict) -> dict[str, Any]:
        bound = self._signature.bind_partial(*args, **kwargs).arguments
        for name, parameter in self._signature.parameters.items():
            if parameter.kind is inspect.Parameter.VAR_KEYWORD and name in bound:
                bound = {**bound, **bound.pop(name)}
        return bound

    def _plan(self, arguments: dict[str, Any]) -> _CallPlan | None:
        timestep = arguments.get(self.timestep_arg)
        if timestep is None:
            self._warn("timestep", f"{self.denoiser_name}: no {self.timestep_arg!r} in the call; running the network.")
            return None
        t = float(timestep.max()) if isinstance(timestep, torch.Tensor) else float(timestep)
        self._sync_generation()
        branch = self.branches.get_state()
        if branch.last_timestep is None or t != branch.last_timestep:
            if self.steps is None and branch.last_timestep is not None and self._ended(branch, t):
                self._start_generation(None, self.config.num_inference_steps)
                branch = self.branches.get_state()
            branch.step += 1
            branch.calls_in_step = 0
            branch.last_timestep = t
            if branch.first_timestep is None:
                branch.first_timestep = t
        slot = branch.calls_in_step
        branch.calls_in_step += 1
        step, n = branch.step, self._num_steps
        if n is None:
            self._warn("steps", f"{self.denoiser_name}: the step count is unknown; running the network.")
            return None

        input_key = tuple(
            (name, tuple(v.shape), v.dtype) for name, v in arguments.items() if isinstance(v, torch.Tensor)
        )
        trajectory = branch.trajectories.get(slot)
        if trajectory is not None and trajectory.input_key != input_key:
            trajectory = None  # a new resolution or batch: start over
        if step >= n:
            return _CallPlan(step, None, None)
        if trajectory is None:
            trajectory = Trajectory(self._new_forecaster(n), input_key)
            branch.trajectories[slot] = trajectory

        extras = has_extra_inputs(arguments)
        if extras:
            self._warn("extras", f"{self.denoiser_name}: per-step inputs {extras} reach the denoiser; Spectrum runs every step.")
        if step in self._compute_steps or extras or trajectory.forecaster.num_recorded == 0:
            return _CallPlan(step, trajectory, None)
        prediction = trajectory.forecaster.predict(step)
        if not bool(torch.isfinite(prediction).all()):
            self._warn("nonfinite", f"{self.denoiser_name}: non-finite forecast at step {step}; running the network.")
            return _CallPlan(step, trajectory, None)
        return _CallPlan(step, trajectory, prediction)

    def _sync_generation(self) -> None:
        if self.steps is None:
            if self._num_steps is None:
                self._start_generation(None, self.config.num_inference_steps)
            return
        token = self.steps.token()
        if token is not None and token is not self._generation_token:
            n = self.steps.num_steps()
            wanted = self.config.num_inference_steps
            if wanted is not None and wanted != n and self.steps.routes is None:
                self._warn(
                    "count",
                    f"{self.denoiser_name}: SpectrumConfig.num_inference_steps={wanted} but the pipeline runs "
                    f"{n} steps; the schedule follows the pipeline.",
                )
            self._start_generation(token, n)

    def _ended(self, branch: BranchState, t: float) -> bool:
        """Without a scheduler, a new generation shows as the first timestep coming back or the count
        running out (timesteps fall for most models and rise for some, e.g. Lumina2)."""
        return t == branch.first_timestep or (self._num_steps is not None and branch.step + 1 >= self._num_steps)

    def _start_generation(self, token: object | None, num_steps: int | None) -> None:
        self.branches.branches.clear()
        self._generation_token = token
        self._num_steps = num_steps
        self._compute_steps = frozenset(compute_steps(self.config, num_steps)) if num_steps else frozenset()

    def _new_forecaster(self, num_steps: int) -> FeatureForecaster:
        c = self.config
        return make_forecaster(c.forecaster, num_steps, c.degree, c.ridge_lambda, c.blend_weight)

    # -- recording ----------------------------------------------------------------------------
    def record(self, plan: _CallPlan, feature: torch.Tensor) -> None:
        try:
            plan.trajectory.forecaster.update(plan.step, feature)
        except ValueError as error:
            self._warn("record", f"{self.denoiser_name}: not recorded: {error}")
            return
        trajectory = plan.trajectory
        trajectory.peak_bytes = max(trajectory.peak_bytes, trajectory.forecaster.nbytes)

    def _finish(self, plan: _CallPlan) -> None:
        trajectory = plan.trajectory
        if trajectory is None:
            return
        (trajectory.forecast if plan.prediction is not None else trajectory.computed).append(plan.step)
        if plan.step == self._num_steps - 1:
            trajectory.forecaster.reset()  # the trajectory is complete: free its tensors

    def _run_output_mode(self, plan: _CallPlan, forward: Callable, args: tuple, kwargs: dict) -> Any:
        trajectory = plan.trajectory
        if plan.prediction is not None and trajectory.output_kind is not None:
            self._finish(plan)
            return _rebuild_output(trajectory.output_kind, plan.prediction)
        plan.prediction = None
        output = forward(*args, **kwargs)
        if trajectory is not None:
            sample, kind = _split_output(output)
            if sample is not None:
                trajectory.output_kind = kind
                self.record(plan, sample)
        self._finish(plan)
        return output

    def _warn(self, kind: str, message: str) -> None:
        if kind not in self._warned:
            self._warned.add(kind)
            warnings.warn(message, SpectrumWarning, stacklevel=3)

    # -- reporting ----------------------------------------------------------------------------
    def summaries(self) -> list[BranchSummary]:
        """The current generation's trajectories, or the last finished generation's."""
        return self._live_report() or self._last_report

    def _live_report(self) -> list[BranchSummary]:
        out = []
        for branch_name, branch in self.branches.branches.items():
            for slot, trajectory in sorted(branch.trajectories.items()):
                label = branch_name if slot == 0 else f"{branch_name}[{slot}]"
                out.append(
                    BranchSummary(
                        denoiser=self.denoiser_name,
                        branch=label,
                        num_inference_steps=self._num_steps,
                        computed_steps=tuple(trajectory.computed),
                        forecast_steps=tuple(trajectory.forecast),
                        peak_bytes=trajectory.peak_bytes,
                    )
                )
        return out


class BlockSkipHook(ModelHook):
    """Runs its block on compute steps; on forecast steps returns placeholders of the shapes the
    block produced for inputs of the same shapes (inputs passed through where shapes match, zeros
    otherwise), because the head's input is replaced anyway."""

    def __init__(self, owner: SpectrumDenoiserHook) -> None:
        super().__init__()
        self.owner = owner
        self.templates: dict[tuple, Any] = {}

    def new_forward(self, module: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        plan = self.owner.plan
        key = _shapes_key(args, kwargs)
        if plan is not None and plan.prediction is not None and key in self.templates:
            inputs = [v for v in (*args, *kwargs.values()) if isinstance(v, torch.Tensor)]
            return _fill_template(self.templates[key], inputs)
        output = self.fn_ref.original_forward(*args, **kwargs)
        if plan is not None and plan.prediction is None:
            try:
                self.templates[key] = _make_template(output)
            except TypeError:
                pass  # an output we cannot mimic: this block keeps running on forecast steps
        return output


class HeadInputHook(ModelHook):
    """Records the output head's input on compute steps and replaces it on forecast steps."""

    def __init__(self, owner: SpectrumDenoiserHook) -> None:
        super().__init__()
        self.owner = owner

    def pre_forward(self, module: torch.nn.Module, *args: Any, **kwargs: Any) -> tuple[tuple, dict]:
        plan = self.owner.plan
        if plan is None or plan.head_seen or not args or not isinstance(args[0], torch.Tensor):
            return args, kwargs
        plan.head_seen = True
        if plan.prediction is not None:
            return (plan.prediction, *args[1:]), kwargs
        if plan.trajectory is not None:
            self.owner.record(plan, args[0])
        return args, kwargs


# -- placeholder outputs for skipped blocks ----------------------------------------------------
@dataclass(frozen=True)
class _TensorSpec:
    shape: tuple[int, ...]
    dtype: torch.dtype
    device: torch.device


def _shapes_key(args: tuple, kwargs: dict) -> tuple:
    return tuple(
        (tuple(v.shape), v.dtype) if isinstance(v, torch.Tensor) else None for v in (*args, *kwargs.values())
    )


def _make_template(output: Any) -> Any:
    if isinstance(output, torch.Tensor):
        return _TensorSpec(tuple(output.shape), output.dtype, output.device)
    if isinstance(output, (tuple, list)):
        return type(output)(_make_template(o) for o in output)
    if output is None or isinstance(output, (int, float, bool, str)):
        return output
    raise TypeError(f"cannot skip a block that returns {type(output).__name__}")


def _fill_template(template: Any, inputs: list[torch.Tensor]) -> Any:
    if isinstance(template, _TensorSpec):
        for tensor in inputs:
            if tuple(tensor.shape) == template.shape and tensor.dtype == template.dtype:
                return tensor
        return torch.zeros(template.shape, dtype=template.dtype, device=template.device)
    if isinstance(template, (tuple, list)):
        return type(template)(_fill_template(t, inputs) for t in template)
    return template


def _split_output(output: Any) -> tuple[torch.Tensor | None, type | None]:
    """The denoiser's sample and how to rebuild an output of the same kind around a forecast."""
    if isinstance(output, torch.Tensor):
        return output, torch.Tensor
    if isinstance(output, tuple) and len(output) == 1 and isinstance(output[0], torch.Tensor):
        return output[0], tuple
    sample = getattr(output, "sample", None)
    if isinstance(sample, torch.Tensor) and len(output) == 1:
        return sample, type(output)
    return None, None


def _rebuild_output(kind: type, sample: torch.Tensor) -> Any:
    if kind is torch.Tensor:
        return sample
    if kind is tuple:
        return (sample,)
    return kind(sample=sample)
