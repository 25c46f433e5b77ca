"""Local forecasters to compare Spectrum against, on the same schedule and hooks."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from .base import FeatureForecaster


class ReuseForecaster(FeatureForecaster):
    """Returns the last recorded feature unchanged (FORA-style feature reuse)."""

    def __init__(self, num_inference_steps: int = 50, time_points: Sequence[float] | None = None) -> None:
        super().__init__(num_inference_steps, time_points)
        self._last: torch.Tensor | None = None  # nbytes is asked before the first record, too

    def _clear(self) -> None:
        self._last = None

    def _tensors(self) -> list[torch.Tensor | None]:
        return [self._last]

    def _last_feature(self) -> torch.Tensor | None:
        return self._last

    def _record(self, step: int, feature: torch.Tensor) -> None:
        self._last = feature.clone()

    def _forecast(self, step: int) -> torch.Tensor:
        assert self._last is not None  # predict() runs after an update()
        return self._last.clone()


class TaylorForecaster(FeatureForecaster):
    """A Taylor expansion around the last recorded step, with derivatives estimated by finite
    differences between recorded steps (TaylorSeer-style):

        h(s) ~ sum_{i=0..order} d_i (s - s_last)^i / i!,  d_{i+1} = (d_i - d_i^prev) / (s_last - s_prev).

    Its error grows like (s - s_last)^(order+1), which is what Spectrum's global fit avoids.
    """

    def __init__(self, order: int = 1, num_inference_steps: int = 50, time_points: Sequence[float] | None = None) -> None:
        if isinstance(order, bool) or not isinstance(order, int) or order < 0:
            raise ValueError(f"order must be an integer >= 0, got {order!r}.")
        super().__init__(num_inference_steps, time_points)
        self.order = order
        self._clear()

    def _clear(self) -> None:
        self._factors: list[torch.Tensor] = []  # d_0 .. d_k in float32, k <= order

    def _tensors(self) -> list[torch.Tensor | None]:
        return list(self._factors)

    def _last_feature(self) -> torch.Tensor | None:
        return self._factors[0].to(self._dtype) if self._factors else None

    def _record(self, step: int, feature: torch.Tensor) -> None:
        factors = [feature.to(torch.float32, copy=True)]
        if self._last_step is not None:
            distance = self.time(step) - self.time(self._last_step)
            for i in range(min(self.order, len(self._factors))):
                factors.append((factors[i] - self._factors[i]) / distance)
        self._factors = factors
        self._dtype = feature.dtype

    def _forecast(self, step: int) -> torch.Tensor:
        assert self._last_step is not None  # predict() runs after an update()
        delta = self.time(step) - self.time(self._last_step)
        out = self._factors[0].clone()
        for i, factor in enumerate(self._factors[1:], start=1):
            out.add_(factor, alpha=delta**i / math.factorial(i))
        return out.to(self._dtype)
