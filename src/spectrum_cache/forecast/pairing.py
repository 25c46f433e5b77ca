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
        # The secondary's feature of a step whose primary feature has not come yet: (step, feature).
        self._waiting: tuple[int, torch.Tensor] | None = None
        self._cached: tuple[int, torch.Tensor] | None = None  # the primary's forecast of one step

    @property
    def num_inference_steps(self) -> int:
        return self.primary.num_inference_steps

    @property
    def nbytes(self) -> int:
        """Bytes of the tensors held (both forecasters and a feature waiting for its pair)."""
        pending = self._waiting[1].numel() * self._waiting[1].element_size() if self._waiting is not None else 0
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
        self._waiting = None
        self._cached = None

    def update(self, branch: int, step: int, feature: torch.Tensor) -> None:
        """Record branch ``branch``'s feature, computed by the network at ``step``.

        The primary's feature goes to its forecaster, which keeps its last feature; a secondary
        feature recorded before the primary's of the same step waits for it. The difference is
        recorded when both branches have been recorded at one step; a step only one branch recorded
        leaves it unchanged.
        """
        self._check_branch(branch)
        self._cached = None
        if branch == PRIMARY:
            self.primary.update(step, feature)
            waiting, self._waiting = self._waiting, None
            if waiting is not None and waiting[0] == step:
                self.difference.update(step, _minus(waiting[1], feature))
            return
        if self._waiting is not None and self._waiting[0] >= step:
            raise ValueError(f"branch {branch} already recorded step {self._waiting[0]}, got step {step}.")
        if self.primary.last_recorded_step == step:
            last = self.primary.last_feature
            assert last is not None  # the primary recorded this step
            self.difference.update(step, _minus(feature, last))
        else:
            self._waiting = (step, feature.detach())

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
    """b - a in b's dtype and on b's device, computed in float32 so that it is rounded once (a and b may
    differ in dtype; a is in host memory when the primary keeps its state there, state_device="cpu")."""
    return (b.float() - a.to(b.device).float()).to(b.dtype)


class PairBranch(FeatureForecaster):
    """One branch of a ``PairedForecaster``, with the interface of a forecaster of its own.

    The two branches' views share the pair; the pair is cleared once both views have been reset (each
    branch finishes its trajectory on its own call of the last step).
    """

    def __init__(self, pair: PairedForecaster, branch: int, partner_done: list[bool] | None = None) -> None:
        PairedForecaster._check_branch(branch)
        super().__init__(pair.num_inference_steps)
        self.pair = pair
        self.branch = branch
        self._done = partner_done if partner_done is not None else [False, False]

    @classmethod
    def views(cls, pair: PairedForecaster) -> tuple[PairBranch, PairBranch]:
        """The primary's and the secondary's views of ``pair``."""
        done = [False, False]
        return cls(pair, PRIMARY, done), cls(pair, SECONDARY, done)

    @property
    def num_recorded(self) -> int:
        """Steps this branch can forecast from: 0 until the pair has what ``predict`` needs."""
        return self._num_recorded if self.pair.ready(self.branch) else 0

    @property
    def ridge_jitter(self) -> float:
        return float(getattr(self.pair.primary, "ridge_jitter", 0.0)) if self.branch == PRIMARY else 0.0

    def _record(self, step: int, feature: torch.Tensor) -> None:
        self._done[self.branch] = False
        self.pair.update(self.branch, step, feature)

    def _forecast(self, step: int) -> torch.Tensor:
        return self.pair.predict(self.branch, step)

    def _clear(self) -> None:
        if not hasattr(self, "pair"):
            return  # FeatureForecaster.__init__ has not set the pair yet
        self._done[self.branch] = True
        if all(self._done):
            self.pair.reset()

    def _tensors(self) -> list[torch.Tensor | None]:
        own = self.pair.primary if self.branch == PRIMARY else self.pair.difference
        waiting = self.pair._waiting if self.branch == SECONDARY else None
        return [*own._tensors(), waiting[1] if waiting is not None else None]


class BatchedPair(FeatureForecaster):
    """A ``PairedForecaster`` over a batch that stacks the two branches along dim 0 (batched CFG).

    Args:
        pair: the pair; its primary forecasts the half at ``primary_half`` (0: the first half).
        primary_half: which half of the batch is the primary branch.
    """

    def __init__(self, pair: PairedForecaster, primary_half: int) -> None:
        if primary_half not in (0, 1):
            raise ValueError(f"primary_half must be 0 or 1, got {primary_half!r}.")
        super().__init__(pair.num_inference_steps)
        self.pair = pair
        self.primary_half = primary_half

    @property
    def ridge_jitter(self) -> float:
        return float(getattr(self.pair.primary, "ridge_jitter", 0.0))

    def _record(self, step: int, feature: torch.Tensor) -> None:
        if feature.shape[0] % 2:
            raise ValueError(f"a batched pair needs an even batch, got {feature.shape[0]}.")
        halves = feature.chunk(2, dim=0)
        self.pair.update_batched(step, halves[self.primary_half], halves[1 - self.primary_half])

    def _forecast(self, step: int) -> torch.Tensor:
        primary, secondary = self.pair.predict(PRIMARY, step), self.pair.predict(SECONDARY, step)
        return torch.cat((primary, secondary) if self.primary_half == 0 else (secondary, primary), dim=0)

    def _clear(self) -> None:
        if hasattr(self, "pair"):
            self.pair.reset()

    def _tensors(self) -> list[torch.Tensor | None]:
        return [*self.pair.primary._tensors(), *self.pair.difference._tensors()]
