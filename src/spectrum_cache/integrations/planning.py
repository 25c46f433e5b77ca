"""Whether a placed call runs the network or is forecast: a function of (generation, branch, step).

Nothing here touches a module: ``plan`` reads the generation's schedule and the branch's trajectory
(starting one where the call's input shapes are new) and says what the call does.
"""

from __future__ import annotations

from dataclasses import dataclass

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

    A call forecasts iff ``step`` is not one of the schedule's compute steps, no per-step extra input
    (ControlNet residuals) reaches it, and its trajectory has a recorded feature to forecast from. New
    input shapes (another resolution or batch) start a new trajectory; the old one is kept for the summary.
    """
    state = generation.branch(branch)
    trajectory = state.trajectories.get(slot)
    note = None
    if trajectory is not None and trajectory.input_key != input_key:
        trajectory.forecaster.reset()
        state.retired.append((slot, trajectory))
        trajectory = None
    if trajectory is None:
        forecaster, note = generation.forecaster_for(branch, slot, batch)
        trajectory = Trajectory(forecaster, input_key, first_step=step)
        state.trajectories[slot] = trajectory
    # A pair's view counts no recorded step until the pair can forecast that branch.
    forecast = step not in generation.compute_steps and not has_extra_inputs and trajectory.forecaster.num_recorded > 0
    return Plan(trajectory, step, forecast, step == generation.num_steps - 1, note)
