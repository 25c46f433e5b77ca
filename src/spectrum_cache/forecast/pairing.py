"""Guidance-aware forecasting: two CFG branches forecast as one trajectory and a difference.

Classifier-free guidance combines the branches as uncond + g (cond - uncond), so any forecast error
that differs between the branches is multiplied by about g. Forecasting each branch on its own
(the paper) lets the two extrapolations err differently; holding both (reuse) errs alike and cancels.

``PairedForecaster`` forecasts the primary branch a with a full forecaster (Spectrum's Chebyshev fit)
and the secondary branch b as that forecast plus a forecast of the difference d = h_b - h_a, which
changes slowly along the trajectory. The guidance term g (h_a - h_b) then comes only from the
difference forecaster, so it is as steady as reuse, while the trajectory itself gets Spectrum's
forecast. The secondary branch holds only the difference forecaster's state (for reuse, one tensor)
instead of a second set of moments and features.
"""

from __future__ import annotations

import torch

from .base import FeatureForecaster

PRIMARY, SECONDARY = 0, 1


class PairedForecaster:
    """Two branches recorded on the same steps, forecast as primary + (secondary - primary).

    Features of the two branches arrive separately (two denoiser calls per step, in either order) or
    together (``update_batched`` for a batch that stacks the branches). The difference is recorded
    when both branches have been recorded at the same step.

    Args:
        primary: the forecaster of branch a's feature.
        difference: the forecaster of d = h_b - h_a (reuse keeps the last measured difference).
    """

    def __init__(self, primary: FeatureForecaster, difference: FeatureForecaster) -> None:
        if primary is difference:
            raise ValueError("primary and difference must be two forecaster objects, got the same one twice.")
        self.primary = primary
        self.difference = difference
        self._pending: dict[int, tuple[int, torch.Tensor]] = {}
        self._cached: tuple[int, torch.Tensor] | None = None  # the primary's forecast of one step

    @property
    def num_inference_steps(self) -> int:
        return self.primary.num_inference_steps

    @property
    def nbytes(self) -> int:
        """Bytes of the tensors held (both forecasters and a feature waiting for its pair)."""
        pending = sum(t.numel() * t.element_size() for _, t in self._pending.values())
        return self.primary.nbytes + self.difference.nbytes + pending

    def ready(self, branch: int) -> bool:
        """Whether ``predict(branch, ...)`` has what it needs."""
        self._check_branch(branch)
        if branch == PRIMARY:
            return self.primary.num_recorded > 0
        return self.primary.num_recorded > 0 and self.difference.num_recorded > 0

    def reset(self) -> None:
        """Forget every recorded step of both branches."""
        self.primary.reset()
        self.difference.reset()
        self._pending.clear()
        self._cached = None

    def update(self, branch: int, step: int, feature: torch.Tensor) -> None:
        """Record branch ``branch``'s feature, computed by the network at ``step``.

        Raises ValueError for a step already recorded for this branch; a step the other branch never
        recorded leaves the difference unchanged (the caller decides whether to stay paired).
        """
        self._check_branch(branch)
        other = SECONDARY if branch == PRIMARY else PRIMARY
        if branch == PRIMARY:
            self.primary.update(step, feature)
        if branch in self._pending and self._pending[branch][0] >= step:
            raise ValueError(f"branch {branch} already recorded step {self._pending[branch][0]}, got step {step}.")
        pending = self._pending.pop(other, None)
        if pending is not None and pending[0] == step:
            a, b = (feature, pending[1]) if branch == PRIMARY else (pending[1], feature)
            self.difference.update(step, _minus(b, a))
        else:
            self._pending[branch] = (step, feature.detach())
        self._cached = None

    def update_batched(self, step: int, primary: torch.Tensor, secondary: torch.Tensor) -> None:
        """Record both branches of one step at once."""
        self.update(PRIMARY, step, primary)
        self.update(SECONDARY, step, secondary)

    def predict(self, branch: int, step: int) -> torch.Tensor:
        """Branch ``branch``'s forecast at ``step``, in the recorded features' shape and dtype."""
        self._check_branch(branch)
        if self._cached is None or self._cached[0] != step:
            self._cached = (step, self.primary.predict(step))
        base = self._cached[1]
        if branch == PRIMARY:
            return base
        return (base.float() + self.difference.predict(step).float()).to(base.dtype)

    @staticmethod
    def _check_branch(branch: object) -> None:
        if branch not in (PRIMARY, SECONDARY):
            raise ValueError(f"branch must be {PRIMARY} (primary) or {SECONDARY} (secondary), got {branch!r}.")


def _minus(b: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """b - a, computed in float32 so that two close low-precision features do not cancel to zero."""
    return (b.float() - a.float()).to(b.dtype)
