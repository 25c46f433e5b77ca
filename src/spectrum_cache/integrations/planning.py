"""Whether a placed call runs the network or is forecast, and which forecaster a trajectory gets.

Nothing here touches a module. ``plan`` reads the generation's schedule and the branch's trajectory
(starting one where the call's input shapes are new) and says what the call does; ``forecasts`` is the
same decision asked ahead, changing nothing (the ControlNet asks it before the denoiser's call).
``forecaster_for`` is the pairing policy: which trajectories share a paired forecaster.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..forecast import (
    PRIMARY,
    SECONDARY,
    BatchedPair,
    FeatureForecaster,
    PairBranch,
    PairedForecaster,
    make_difference_forecaster,
    make_forecaster,
)
from .contexts import BATCHED_CFG_BRANCHES
from .generation import Generation, Trajectory


@dataclass(frozen=True)
class Plan:
    """What one call does: ``forecast`` False runs the network (and records its feature)."""

    trajectory: Trajectory
    step: int
    forecast: bool
    final: bool  # the generation's last step: the trajectory is complete after it
    note: str | None = None  # why paired forecasting could not pair this trajectory


def plan(generation: Generation, branch: str, step: int, slot: int = 0, input_key: tuple = (),
         batch: int | None = None, has_extra_inputs: bool = False) -> Plan:
    """The plan of the ``slot``-th call of ``branch`` at ``step`` of ``generation``.

    New input shapes (another resolution or batch) start a new trajectory; the old one is kept for the
    summary. Whether the call forecasts is ``forecasts``."""
    state = generation.branch(branch)
    trajectory = state.trajectories.get(slot)
    note = None
    if trajectory is not None and trajectory.input_key != input_key:
        trajectory.forecaster.reset()
        state.retired.append((slot, trajectory))
        trajectory = None
    if trajectory is None:
        forecaster, note = forecaster_for(generation, branch, slot, batch)
        trajectory = Trajectory(forecaster, input_key, first_step=step)
        state.trajectories[slot] = trajectory
    forecast = not has_extra_inputs and forecasts(generation, trajectory, step)
    return Plan(trajectory, step, forecast, step == (generation.num_steps or 0) - 1, note)


def forecasts(generation: Generation, trajectory: Trajectory | None, step: int) -> bool:
    """Whether a call of ``trajectory`` at ``step`` forecasts: ``step`` is not one of the schedule's compute
    steps, and the trajectory has a recorded feature to forecast from (and, forecasting the output, knows
    the output's layout). Per-step extra inputs (ControlNet residuals) make a call compute as well."""
    if trajectory is None or generation.num_steps is None or step >= generation.num_steps:
        return False
    if step in generation.compute_steps:
        return False
    # A pair's view counts no recorded step until the pair can forecast that branch.
    if trajectory.forecaster.num_recorded == 0:
        return False
    return not (generation.config.forecast_output and trajectory.output_layout is None)


def new_forecaster(generation: Generation) -> FeatureForecaster:
    c = generation.config
    assert generation.num_steps is not None  # a generation without steps plans nothing
    return make_forecaster(c.forecaster, generation.num_steps, c.degree, c.ridge_lambda, c.blend_weight,
                           generation.time_points, c.history, c.state_device, generation.held_dtype)


def forecaster_for(generation: Generation, branch: str, slot: int, batch: int | None) -> tuple[FeatureForecaster,
                                                                                               str | None]:
    """The forecaster of a new trajectory, and a note when paired forecasting was asked for and
    cannot pair this one. Pairs come from the pipeline: ``cache_context`` branches named ``cond``
    and ``uncond``; else the adapter table's layout of the running pipeline, when the call runs CFG."""
    if generation.config.guidance_forecast != "paired":
        return new_forecaster(generation), None
    if branch in ("cond", "uncond"):
        return _pair_view(generation, ("contexts", slot), PRIMARY if branch == "cond" else SECONDARY), None
    pipeline, layout, uses_cfg = generation.pipeline, generation.layout, generation.uses_cfg
    order = getattr(getattr(pipeline, "scheduler", None), "order", 1)
    if pipeline is None or uses_cfg is False:
        return new_forecaster(generation), None  # a bare loop, or no guidance: nothing to pair
    who = type(pipeline).__name__
    if layout is None:
        if uses_cfg:
            return new_forecaster(generation), (
                f"{who} runs classifier-free guidance in a layout the adapter table does not list, so its "
                "branches are forecast independently (guidance_forecast='paired' needs it: add the pipeline to "
                "spectrum_cache.integrations.adapters.GUIDANCE_LAYOUTS).")
        return new_forecaster(generation), None
    if layout.kind == "calls":
        # Two calls per step are the two branches whether or not the pipeline says it runs CFG (Kandinsky 5
        # tests its guidance inline): a first call that never gets a second is forecast alone, as it would be.
        if order != 1:
            return new_forecaster(generation), (f"{who} calls the denoiser more than twice per step (a scheduler "
                                                f"of order {order}), so the CFG branches are forecast independently.")
        if slot > 1:
            return new_forecaster(generation), None
        primary = (slot == 0) == layout.cond_first
        return _pair_view(generation, ("calls",), PRIMARY if primary else SECONDARY), None
    if branch not in BATCHED_CFG_BRANCHES:
        return new_forecaster(generation), None  # a named call of one branch alongside the batched CFG call
    if uses_cfg is None:
        return new_forecaster(generation), (
            f"{who} does not say whether this call runs classifier-free guidance, so its branches are forecast "
            "independently.")
    if batch is None or batch % 2:
        # Not the two branches stacked (Z-Image's cfg_truncation drops the uncond half late in a run).
        return new_forecaster(generation), None
    return BatchedPair(_new_pair(generation), primary_half=0 if layout.cond_first else 1), None


def _new_pair(generation: Generation) -> PairedForecaster:
    assert generation.num_steps is not None
    return PairedForecaster(new_forecaster(generation),
                            make_difference_forecaster(generation.config.difference_forecaster, generation.num_steps,
                                                       generation.time_points))


def _pair_view(generation: Generation, key: object, branch: int) -> PairBranch:
    """The view of ``branch`` on the pair for ``key``; a new pair once that branch has one already
    (its trajectory started over)."""
    entry = generation.pairs.get(key)
    if entry is None or entry[1][branch]:
        entry = (PairBranch.views(_new_pair(generation)), [False, False])
        generation.pairs[key] = entry
    entry[1][branch] = True
    return entry[0][branch]


def stacked_twice(generation: Generation, latents: torch.Tensor) -> bool | None:
    """Whether a batched-CFG pipeline that does not say whether it runs CFG (PixArt, CogVideoX and Stable Audio
    decide it in a local variable) stacked its latents twice in this call (``torch.cat([latents] * 2)``, as they
    do for CFG): asked once per generation where paired forecasting needs to know, at the cost of one host sync.
    None where the layout is not batched CFG."""
    layout = generation.layout  # None without a pipeline
    if layout is None or layout.kind != "batched":
        return None
    if latents.shape[0] % 2:
        return False
    half = latents.shape[0] // 2
    return bool(torch.equal(latents[:half], latents[half:]))
