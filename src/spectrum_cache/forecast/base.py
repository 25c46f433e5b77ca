"""What every feature forecaster shares: input checks and bookkeeping of recorded steps."""

from __future__ import annotations

import math
import numbers
from abc import ABC, abstractmethod
from collections.abc import Sequence

import torch


class FeatureForecaster(ABC):
    """Records a feature tensor on the steps where the network runs and forecasts it on the others.

    Subclasses keep a fixed amount of state whatever the number of recorded steps; they implement
    ``_record`` and ``_forecast`` and list their tensors in ``_tensors``.

    Args:
        num_inference_steps: N, the trajectory's step count.
        time_points: where each of the N steps sits on the time axis the forecast is made along, in
            step units (strictly increasing, within [0, N)); ``None`` is the step index itself. A
            sampler whose noise level is not linear in the step (FLUX and SD3 shift their sigmas) can
            pass its steps' noise levels mapped onto [0, N - 1] here.
    """

    num_inference_steps: int
    time_points: tuple[float, ...] | None
    _num_recorded: int

    def __init__(self, num_inference_steps: int = 50, time_points: Sequence[float] | None = None) -> None:
        steps = num_inference_steps
        if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < 1:
            raise ValueError(f"num_inference_steps must be an integer >= 1, got {num_inference_steps!r}.")
        self.num_inference_steps = int(num_inference_steps)
        self.time_points = _checked_time_points(time_points, self.num_inference_steps)
        self._shape: torch.Size | None = None
        self._last_step: int | None = None
        self._num_recorded = 0

    def time(self, step: float) -> float:
        """The position of ``step`` on the forecast's time axis (the step itself without time_points;
        between two steps, linearly interpolated)."""
        if self.time_points is None:
            return float(step)
        low = min(int(math.floor(step)), self.num_inference_steps - 1)
        if low == step or low + 1 >= self.num_inference_steps:
            return self.time_points[low]
        frac = step - low
        return (1 - frac) * self.time_points[low] + frac * self.time_points[low + 1]

    @property
    def num_recorded(self) -> int:
        """How many steps were recorded since construction or the last ``reset()``."""
        return self._num_recorded

    @property
    def last_recorded_step(self) -> int | None:
        return self._last_step

    @property
    def last_feature(self) -> torch.Tensor | None:
        """The feature recorded at ``last_recorded_step`` (the forecaster's own copy), or None."""
        return self._last_feature() if self._num_recorded else None

    def _last_feature(self) -> torch.Tensor | None:
        raise NotImplementedError(f"{type(self).__name__} does not keep its last feature")

    @property
    def feature_shape(self) -> torch.Size | None:
        """The shape of the recorded features, or None before the first ``update()``."""
        return self._shape

    @property
    def nbytes(self) -> int:
        """Bytes of the tensors this forecaster holds."""
        return sum(t.numel() * t.element_size() for t in self._tensors() if t is not None)

    def reset(self) -> None:
        """Forget every recorded step."""
        self._shape = None
        self._last_step = None
        self._num_recorded = 0
        self._clear()

    def update(self, step: int, feature: torch.Tensor, check_finite: bool | None = None) -> None:
        """Record ``feature``, computed by the network at ``step``.

        Raises ValueError, leaving the state untouched, for a step outside [0, N) or not after the
        last recorded one, a shape other than the first recorded feature's, or (when checked) a NaN or
        Inf value. ``check_finite`` None checks features on the CPU only: on an accelerator the check
        would make the host wait for the device on every call, so the caller checks there (the diffusers
        integration does, once per trajectory).
        """
        self._check_step("step", step)
        if self._last_step is not None and step <= self._last_step:
            raise ValueError(
                f"step must come after the last recorded step {self._last_step}, got {step}; "
                "call reset() to start a new trajectory."
            )
        if not isinstance(feature, torch.Tensor):
            raise ValueError(f"feature must be a torch.Tensor, got {type(feature).__name__}.")
        if self._shape is not None and feature.shape != self._shape:
            raise ValueError(
                f"feature shape {tuple(feature.shape)} differs from the first recorded shape "
                f"{tuple(self._shape)}; call reset() before recording a new shape."
            )
        if check_finite is None:
            check_finite = feature.device.type == "cpu"
        if check_finite and not all_finite(feature):
            raise ValueError(f"feature at step {step} contains NaN or Inf values; refusing to record it.")
        self._record(step, feature.detach())
        self._shape = feature.shape
        self._last_step = step
        self._num_recorded += 1

    def predict(self, step: int) -> torch.Tensor:
        """The forecast feature at ``step``, with the recorded features' shape, dtype and device."""
        self._check_step("step", step)
        if self._num_recorded == 0:
            raise ValueError("predict() needs at least one update() first: nothing has been recorded.")
        return self._forecast(step)

    def _check_step(self, name: str, step: object) -> None:
        n = self.num_inference_steps
        if (isinstance(step, bool) or not isinstance(step, numbers.Real) or not math.isfinite(step)
                or step < 0 or not step < n):  # a finite step outside [0, n); Real declares only < and <=
            raise ValueError(f"{name} must be a step in [0, {n}) for num_inference_steps={n}, got {step!r}.")

    @abstractmethod
    def _record(self, step: int, feature: torch.Tensor) -> None: ...

    @abstractmethod
    def _forecast(self, step: int) -> torch.Tensor: ...

    @abstractmethod
    def _clear(self) -> None: ...

    @abstractmethod
    def _tensors(self) -> list[torch.Tensor | None]: ...


def _checked_time_points(points: Sequence[float] | None, n: int) -> tuple[float, ...] | None:
    if points is None:
        return None
    values = tuple(float(p) for p in points)
    if len(values) != n:
        raise ValueError(f"time_points must have one value per step ({n}), got {len(values)}.")
    if not all(math.isfinite(v) and 0 <= v < n for v in values):
        raise ValueError(f"time_points must be finite and within [0, {n}), got {values!r}.")
    if any(b <= a for a, b in zip(values, values[1:])):
        raise ValueError(f"time_points must be strictly increasing, got {values!r}.")
    return values


def all_finite(tensor: torch.Tensor) -> bool:
    """Whether ``tensor`` holds no NaN or Inf: its sum is finite exactly then (a NaN or Inf anywhere makes
    the sum NaN or Inf, and finite values of a feature cannot reach float64's range). One reduction,
    about a tenth of the cost of isfinite().all(), which matters on a forecast step's budget."""
    dtype = torch.float64 if tensor.device.type == "cpu" else torch.float32
    return bool(torch.isfinite(tensor.sum(dtype=dtype)))
