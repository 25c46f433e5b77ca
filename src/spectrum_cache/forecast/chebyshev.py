"""Spectrum's forecaster: a Chebyshev ridge fit over all recorded steps, blended with a linear step."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from .base import FeatureForecaster

# Cholesky of the ridge Gram matrix gets this much diagonal jitter (relative to its mean diagonal),
# growing tenfold per retry, when it is singular (ridge_lambda = 0 with fewer steps than coefficients).
_JITTER_START = 1e-10
_JITTER_RETRIES = 8


def chebyshev_basis(tau: float, degree: int) -> list[float]:
    """[T_0(tau), ..., T_degree(tau)]: Chebyshev polynomials of the first kind,
    T_0 = 1, T_1 = tau, T_{m+1} = 2 tau T_m - T_{m-1}."""
    values = [1.0, tau][: degree + 1]
    while len(values) <= degree:
        values.append(2.0 * tau * values[-1] - values[-2])
    return values


class SpectrumForecaster(FeatureForecaster):
    """Forecasts a feature h_s from the steps the network ran (Han et al., CVPR 2026).

    With tau = 2 s / N - 1, the forecast is fitted as h(tau) ~ sum_m c_m T_m(tau) by ridge regression
    over every recorded step, C = (X^T X + lambda I)^-1 X^T H, and blended with a linear step from the
    last two recorded features: (1 - w) (h_last + k (h_last - h_prev)) + w * chebyshev, with
    k = (s - s_last) / (s_last - s_prev).

    Memory does not grow with the number of recorded steps: only the running normal equations
    X^T X ((M+1)^2 numbers) and X^T H ((M+1) float32 copies of the feature) and the last two features
    are kept: 4 (M + 1) + 2 b bytes per feature element for b-byte features, 24 for bfloat16 at M = 4.
    The forecast needs the coefficients only through T(tau)^T C = a^T X^T H with
    a = (X^T X + lambda I)^-1 T(tau), so the solve is (M+1) x (M+1); it is done in float64 by
    Cholesky, and X^T H is accumulated in float32 whatever the feature's dtype.

    Args:
        degree: M, the highest Chebyshev degree.
        ridge_lambda: lambda, the ridge penalty.
        blend_weight: w; 1 is the pure spectral forecast, 0 the pure linear one.
        num_inference_steps: N, the trajectory's step count, which sets tau.
        time_points: the steps' positions on the time axis (see FeatureForecaster); s above is the
            step's position, so tau and k follow the noise level rather than the step index.
        state_device: None keeps the state on the features' device; ``"cpu"`` keeps X^T H and the last
            two features in host memory (pinned on CUDA), so the device holds none of it between
            steps: a record adds to X^T H a slice at a time, a forecast streams it back a slice at a time.
        held_dtype: a narrower dtype to hold recorded features in (h_last, h_prev; the window), used when
            the first recorded feature of a trajectory is exactly representable in it (checked once).
            For a feature that is a wider copy of narrower values, as Wan's float32 head input is of its
            bfloat16 blocks' output; a forecast keeps the recorded features' own dtype.
    """

    def __init__(
        self,
        degree: int = 4,
        ridge_lambda: float = 0.1,
        blend_weight: float = 0.5,
        num_inference_steps: int = 50,
        time_points: Sequence[float] | None = None,
        state_device: str | None = None,
        held_dtype: torch.dtype | None = None,
    ) -> None:
        # Validated through the config so the messages are the same everywhere.
        from ..config import SpectrumConfig, check_state_device

        checked = SpectrumConfig(degree=degree, ridge_lambda=ridge_lambda, blend_weight=blend_weight)
        super().__init__(num_inference_steps, time_points)
        self.degree = checked.degree
        self.ridge_lambda = checked.ridge_lambda
        self.blend_weight = checked.blend_weight
        self.state_device = check_state_device(state_device)
        if held_dtype is not None and not (isinstance(held_dtype, torch.dtype) and held_dtype.is_floating_point):
            raise ValueError(f"held_dtype must be None or a floating-point torch.dtype, got {held_dtype!r}.")
        self.held_dtype = held_dtype
        self._copy_stream: torch.cuda.Stream | None = None  # CUDA with state_device="cpu": the side stream of host copies
        self._clear()

    def tau(self, step: float) -> float:
        """The step's position on the Chebyshev axis [-1, 1]."""
        return 2.0 * self.time(step) / self.num_inference_steps - 1.0

    def _clear(self) -> None:
        size = self.degree + 1
        self._gram = torch.zeros(size, size, dtype=torch.float64)  # X^T X
        # X^T H in float32: one (M+1, numel) tensor on the device, or with state_device="cpu" a list of
        # contiguous (M+1, slice) host tensors, so each slice goes to and from the device in one copy.
        self._moments: torch.Tensor | None = None
        self._host_moments: list[torch.Tensor] = []
        self._last: torch.Tensor | None = None
        self._prev: torch.Tensor | None = None
        self._prev_step: int | None = None
        self._dtype: torch.dtype | None = None  # the recorded features' own dtype (forecasts are made in it)
        self._device: torch.device | None = None  # where the features come from (and forecasts go)
        self._held: torch.dtype | None = None  # the dtype they are held in, chosen on the first record
        # On an accelerator: whether the features held in ``held_dtype`` were exact in it, as a device tensor.
        self.held_exactly: torch.Tensor | None = None
        # The diagonal jitter the last forecast's ridge system needed (0.0: none). Non-zero means the
        # system was singular, e.g. ridge_lambda = 0 with fewer recorded steps than coefficients, and
        # the forecast rests on the jitter rather than on the data; callers may warn about it.
        self.ridge_jitter = 0.0
        # (gram bytes, (X^T X + lambda I)^-1, jitter): the system changes only when a step is recorded,
        # while every forecast step between two records solves it again.
        self._inverse: tuple[bytes, np.ndarray, float] | None = None

    def _tensors(self) -> list[torch.Tensor | None]:
        # The (M+1)^2 Gram matrix counts while it holds records: a reset forecaster holds nothing.
        return [self._gram if self._num_recorded else None, self._moments, *self._host_moments, self._last,
                self._prev]

    def _last_feature(self) -> torch.Tensor | None:
        if self._last is None:
            return None
        assert self._shape is not None  # set with _last
        return self._last.to(device=self._device, dtype=self._dtype).reshape(self._shape)

    def _hold_in(self, feature: torch.Tensor) -> torch.dtype:
        """The dtype this trajectory holds its features in: ``held_dtype`` if the first one is exact in it."""
        if self._held is None:
            narrow = self.held_dtype
            if narrow is None or narrow == feature.dtype or not feature.dtype.is_floating_point:
                self._held = feature.dtype
            elif feature.device.type == "cpu":  # where checking is free
                self._held = narrow if torch.equal(feature.to(narrow).to(feature.dtype), feature) else feature.dtype
            else:
                # On an accelerator a check now would make the host wait for the device. The caller's word that the
                # features are exact in ``narrow`` is taken, and the check kept as a device flag for the caller to
                # read when it may wait (``held_exactly``; the diffusers integration reads it as a generation ends).
                self._held = narrow
                self.held_exactly = (feature.to(narrow).to(feature.dtype) == feature).all()
        return self._held

    def _held_copy(self, feature: torch.Tensor, spare: torch.Tensor | None) -> torch.Tensor:
        """A flat copy of ``feature`` in the held dtype where the state lives (``spare``: a buffer to reuse)."""
        flat = feature.reshape(-1).to(self._hold_in(feature))
        if self.state_device is None:
            return flat.clone() if flat.data_ptr() == feature.data_ptr() else flat
        return _to_host(flat, spare, self._stream)

    def _stream(self, device: torch.device) -> torch.cuda.Stream:  # CUDA only
        if self._copy_stream is None or self._copy_stream.device != device:
            self._copy_stream = torch.cuda.Stream(device)
        return self._copy_stream

    def _record(self, step: int, feature: torch.Tensor) -> None:
        basis = chebyshev_basis(self.tau(step), self.degree)
        row = torch.tensor(basis, dtype=torch.float64)
        flat = feature.reshape(-1)
        self._dtype, self._device = feature.dtype, feature.device
        if self.state_device is None:
            if self._moments is None:
                self._moments = torch.zeros(self.degree + 1, flat.numel(), dtype=torch.float32, device=feature.device)
            _accumulate(self._moments, basis, flat)
        else:
            if not self._host_moments:
                self._host_moments = [_host_zeros((self.degree + 1, end - start), feature.is_cuda)
                                      for start, end in _slices(flat.numel())]
            _add_to_host_moments(self._host_moments, basis, flat, self._stream)
        self._gram += torch.outer(row, row)
        spare = self._prev
        self._prev, self._prev_step = self._last, self._last_step
        self._last = self._held_copy(feature, spare)

    def _forecast(self, step: int) -> torch.Tensor:
        # predict() runs after an update(), which sets these.
        assert self._last is not None and self._shape is not None
        assert self._dtype is not None and self._device is not None
        w = self.blend_weight
        on_last, on_prev = self._linear_coefficients(step, self._prev_step if self._prev is not None else None)
        weights = self._spectral_weights(step, w, self._device) if w > 0 else None
        if self.state_device is not None:
            out = _host_forecast(self._host_moments, weights, self._last, on_last, self._prev, on_prev,
                                 self._dtype, self._device, self._stream)
            return out.reshape(self._shape)
        assert self._moments is not None  # kept on the device (state_device None)
        out = _forecast_slice(self._moments, weights, self._last, on_last, self._prev if on_prev else None, on_prev)
        return out.reshape(self._shape).to(self._dtype)

    def _linear_coefficients(self, step: int, prev_step: int | None) -> tuple[float, float]:
        """The blend's linear part, (1 - w) (h_last + k (h_last - h_prev)), as coefficients on h_last and
        h_prev; with no previous step (``prev_step`` None) it holds h_last."""
        w = self.blend_weight
        if w >= 1 or prev_step is None:
            return 1.0 - w, 0.0
        assert self._last_step is not None  # a previous step implies a last one
        last_time = self.time(self._last_step)
        k = (self.time(step) - last_time) / (last_time - self.time(prev_step))
        return (1 - w) * (1 + k), -(1 - w) * k

    def _ridge_weights(self, gram: np.ndarray, step: int) -> np.ndarray:
        """a = (X^T X + lambda I)^-1 T(tau) for the Gram matrix X^T X, so that the Chebyshev forecast
        T(tau)^T C is a^T X^T H; notes the jitter the solve needed in ``ridge_jitter``."""
        target = np.asarray(chebyshev_basis(self.tau(step), self.degree), dtype=np.float64)
        key = gram.tobytes()
        if self._inverse is None or self._inverse[0] != key:
            self._inverse = (key, *_ridge_inverse(gram, self.ridge_lambda))
        _, inverse, self.ridge_jitter = self._inverse
        return inverse @ target

    def _spectral_weights(self, step: int, scale: float, device: torch.device) -> torch.Tensor:
        """scale * a (see _ridge_weights): the weights of the moments' rows whose sum is the Chebyshev
        forecast, as float32 on ``device`` (where the forecast is summed)."""
        weights = torch.from_numpy(self._ridge_weights(self._gram.numpy(), step) * scale).to(torch.float32)
        if device.type != "cpu":
            # The solve depends only on the steps, so it runs on the host; a plain copy to the device
            # would wait for the device's queue, a pinned asynchronous one does not.
            weights = weights.pin_memory().to(device, non_blocking=True)
        return weights


class WindowedSpectrumForecaster(SpectrumForecaster):
    """Spectrum's forecast fitted to the last ``history`` recorded steps only: a local variant.

    It keeps those features as they came (bfloat16 stays bfloat16) instead of the float32 moments
    X^T H, so it holds K x (bytes per element) per feature element instead of 4 (M + 1) + 2 x (bytes
    per element): for bfloat16 features and the paper's M = 4, 2K bytes against 24. A forecast is
    summed in float32 a slice at a time (``_CHUNK`` elements), so it needs only the output feature
    beyond that. With K at least the number of recorded steps it is the full fit (up to float32
    rounding); with fewer, older steps no longer pull on the fit. K must be at least M + 1: with fewer
    points than coefficients the ridge penalty, not the data, would choose the fit.

    With ``state_device="cpu"`` the window lives in host memory (pinned when the features are on a
    CUDA device): a record is copied out on a side stream, overlapping the rest of the call, and a
    forecast streams the window back a slice at a time into two staging buffers (the copy of one slice
    overlaps the sum of the previous one). The device then holds none of the window, only the forecast
    it returns and 2 x K slices. For features already on the CPU it is the same path, a plain copy.

    Args:
        history: K >= degree + 1, how many of the most recent recorded steps the fit uses.
        (the rest as in SpectrumForecaster)
    """

    def __init__(
        self,
        history: int,
        degree: int = 4,
        ridge_lambda: float = 0.1,
        blend_weight: float = 0.5,
        num_inference_steps: int = 50,
        time_points: Sequence[float] | None = None,
        state_device: str | None = None,
        held_dtype: torch.dtype | None = None,
    ) -> None:
        from ..config import check_history

        self.history = check_history(history, degree)
        super().__init__(degree, ridge_lambda, blend_weight, num_inference_steps, time_points, state_device, held_dtype)

    def _clear(self) -> None:
        super()._clear()
        self._window: list[tuple[int, torch.Tensor]] = []  # (step, flat feature in the held dtype), oldest first

    def _tensors(self) -> list[torch.Tensor | None]:
        return [feature for _, feature in self._window]

    def _last_feature(self) -> torch.Tensor | None:
        if not self._window:
            return None
        assert self._shape is not None  # set with the window's first feature
        return self._window[-1][1].to(device=self._device, dtype=self._dtype).reshape(self._shape)

    def _record(self, step: int, feature: torch.Tensor) -> None:
        self._dtype, self._device = feature.dtype, feature.device
        # The oldest goes first, so that the window never holds K + 1 features; in host memory its buffer
        # takes the new one (pinning is slow).
        dropped = self._window.pop(0)[1] if len(self._window) == self.history else None
        self._window.append((step, self._held_copy(feature, dropped)))

    def _forecast(self, step: int) -> torch.Tensor:
        steps = [s for s, _ in self._window]
        rows = torch.tensor([chebyshev_basis(self.tau(s), self.degree) for s in steps], dtype=torch.float64)
        weights = torch.zeros(len(steps), dtype=torch.float64)
        w = self.blend_weight
        if w > 0:
            # a^T X^T H with X the window's rows: one weight per recorded feature, w X a.
            weights += w * (rows @ torch.from_numpy(self._ridge_weights((rows.T @ rows).numpy(), step)))
        on_last, on_prev = self._linear_coefficients(step, steps[-2] if len(steps) > 1 else None)
        weights[-1] += on_last
        if on_prev:
            weights[-2] += on_prev
        features = [feature for _, feature in self._window]
        device, dtype, shape = self._device, self._dtype, self._shape
        assert device is not None and dtype is not None and shape is not None  # predict() runs after an update()
        if device.type == "cuda" and features[-1].device.type == "cpu":
            out = _streamed_sum(weights.tolist(), features, device, dtype, self._stream(device))
        else:
            out = _chunked_sum(weights.tolist(), features, device, dtype)
        return out.reshape(shape)


# Elements per slice of a forecast's float32 sum, and of host-memory state (16 MiB of float32): large enough
# that the per-slice overhead is nothing next to the sum, small enough that the float32 slice is nothing
# next to a feature.
_CHUNK = 1 << 22


def _slices(numel: int) -> list[tuple[int, int]]:
    return [(start, min(start + _CHUNK, numel)) for start in range(0, numel, _CHUNK)]


def _host_empty(shape: tuple[int, ...] | torch.Size, dtype: torch.dtype, pinned: bool) -> torch.Tensor:
    return torch.empty(shape, dtype=dtype, device="cpu", pin_memory=pinned)


def _host_zeros(shape: tuple[int, ...], pinned: bool) -> torch.Tensor:
    return _host_empty(shape, torch.float32, pinned).zero_()


# Gives the side stream of host copies for a CUDA device (SpectrumForecaster._stream).
_StreamOf = Callable[[torch.device], torch.cuda.Stream]


def _to_host(flat: torch.Tensor, spare: torch.Tensor | None, stream_of: _StreamOf) -> torch.Tensor:
    """``flat`` copied into host memory (into ``spare`` when it fits: pinning is slow). From a CUDA device the
    copy runs on the side stream once the feature is made; every copy into or out of a host buffer is on that
    one stream, so reusing a buffer waits for the copies still reading it. The host never reads them."""
    if spare is None or spare.shape != flat.shape or spare.dtype != flat.dtype:
        spare = _host_empty(flat.shape, flat.dtype, flat.is_cuda)
    if not flat.is_cuda:
        return spare.copy_(flat)
    stream = stream_of(flat.device)
    stream.wait_stream(torch.cuda.current_stream(flat.device))
    with torch.cuda.stream(stream):
        spare.copy_(flat, non_blocking=True)
    flat.record_stream(stream)  # the allocator must not reuse the feature before the copy has read it
    return spare


def _staging(rows: int, size: int, dtype: torch.dtype, device: torch.device) -> list[torch.Tensor]:
    """Two flat staging buffers of ``rows`` x ``size``; ``_rows_of`` views a slice of one as contiguous rows."""
    return [torch.empty(rows * size, dtype=dtype, device=device) for _ in range(2)]


def _rows_of(buffer: torch.Tensor, rows: int, length: int) -> torch.Tensor:
    return buffer[: rows * length].view(rows, length)


def _add_to_host_moments(moments: list[torch.Tensor], basis: list[float], flat: torch.Tensor,
                         stream_of: _StreamOf) -> None:
    """X^T H += T(tau)^T h on host-memory moments, a slice at a time. On the CPU in place; from a CUDA
    device each slice goes to the device on the side stream, is added to there, and comes back on it, with
    two staging buffers so that the copies of one slice overlap the sum of the other."""
    if not flat.is_cuda:
        for chunk, (start, end) in zip(moments, _slices(flat.numel())):
            _accumulate(chunk, basis, flat[start:end])
        return
    device, rows = flat.device, len(basis)
    compute, stream = torch.cuda.current_stream(device), stream_of(device)
    staging = _staging(rows, moments[0].shape[1], torch.float32, device)
    stream.wait_stream(compute)  # the staging buffers are made on the current stream
    for index, (chunk, (start, end)) in enumerate(zip(moments, _slices(flat.numel()))):
        buffer = _rows_of(staging[index % 2], rows, end - start)
        with torch.cuda.stream(stream):  # after this buffer's last copy back (same stream)
            buffer.copy_(chunk, non_blocking=True)
            ready = torch.cuda.Event()
            ready.record(stream)
        compute.wait_event(ready)
        _accumulate(buffer, basis, flat[start:end])
        added = torch.cuda.Event()
        added.record(compute)
        with torch.cuda.stream(stream):
            stream.wait_event(added)
            chunk.copy_(buffer, non_blocking=True)
    for buffer in staging:
        buffer.record_stream(stream)


def _accumulate(moments: torch.Tensor, basis: list[float], flat: torch.Tensor) -> None:
    """X^T H += T(tau)^T h in place, a row per coefficient: the same operations wherever the moments live."""
    for m, t_m in enumerate(basis):
        moments[m].add_(flat, alpha=t_m)


def _forecast_slice(moments: torch.Tensor, weights: torch.Tensor | None, h_last: torch.Tensor, on_last: float,
                    h_prev: torch.Tensor | None, on_prev: float) -> torch.Tensor:
    """on_last h_last + (X^T H)^T (w a) + on_prev h_prev in float32, in one fused pass where w > 0 (``weights``
    None: w = 0): the full fit's forecast of the elements ``moments`` (rows of X^T H) cover."""
    if weights is not None:
        acc = torch.addmv(h_last.to(torch.float32), moments.T, weights, beta=on_last)
    else:
        acc = h_last.to(torch.float32) * on_last
    if h_prev is not None:
        acc.add_(h_prev, alpha=on_prev)
    return acc


def _host_forecast(moments: list[torch.Tensor], weights: torch.Tensor | None, last: torch.Tensor, on_last: float,
                   prev: torch.Tensor | None, on_prev: float, dtype: torch.dtype, device: torch.device,
                   stream_of: _StreamOf) -> torch.Tensor:
    """The full fit's forecast from host-memory state, on ``device``, a slice at a time (``_forecast_slice``,
    ``weights`` on ``device``), returned flat in ``dtype``. From the CPU the same operations as the on-device
    forecast, slice by slice; to a CUDA device each slice's moments and features are copied on the side stream
    into one of two staging buffers while the current stream sums the slice before."""
    numel = last.numel()
    out = torch.empty(numel, dtype=dtype, device=device)
    on_cuda = device.type == "cuda"
    rows = moments[0].shape[0]
    if on_cuda:
        compute, stream = torch.cuda.current_stream(device), stream_of(device)
        size = moments[0].shape[1]
        staging = _staging(rows, size, torch.float32, device)
        held = _staging(2, size, last.dtype, device)
        freed: list[torch.cuda.Event | None] = [None, None]
        stream.wait_stream(compute)  # the staging buffers and out are made on the current stream
    for index, (chunk, (start, end)) in enumerate(zip(moments, _slices(numel))):
        h_last = last[start:end]
        h_prev = prev[start:end] if prev is not None and on_prev else None  # on_prev is 0 without a prev
        if on_cuda:
            buffer = _rows_of(staging[index % 2], rows, end - start)
            features = _rows_of(held[index % 2], 2, end - start)
            with torch.cuda.stream(stream):
                reader = freed[index % 2]
                if reader is not None:
                    stream.wait_event(reader)  # the sum two slices back has read these buffers
                buffer.copy_(chunk, non_blocking=True)
                features[0].copy_(h_last, non_blocking=True)
                if h_prev is not None:
                    features[1].copy_(h_prev, non_blocking=True)
                ready = torch.cuda.Event()
                ready.record(stream)
            compute.wait_event(ready)
            chunk, h_last, h_prev = buffer, features[0], features[1] if h_prev is not None else None
        out[start:end].copy_(_forecast_slice(chunk, weights, h_last, on_last, h_prev, on_prev))
        if on_cuda:
            done = torch.cuda.Event()
            done.record(compute)
            freed[index % 2] = done
    if on_cuda:
        for buffer in (*staging, *held):
            buffer.record_stream(stream)
    return out


def _chunked_sum(weights: list[float], features: list[torch.Tensor], device: torch.device,
                 dtype: torch.dtype) -> torch.Tensor:
    """sum_i weights[i] * features[i] of flat features, summed in float32, flat in ``dtype`` on ``device``
    (features elsewhere are copied there a slice at a time). Slices sum in the same order as the whole, bitwise."""
    out = torch.empty(features[-1].numel(), dtype=dtype, device=device)
    for start, end in _slices(out.numel()):
        # float32 output is summed in place: no slice to copy over.
        acc = out[start:end].zero_() if dtype == torch.float32 else torch.zeros(
            end - start, dtype=torch.float32, device=device)
        for weight, flat in zip(weights, features):
            acc.add_(flat[start:end].to(device), alpha=weight)
        if acc.data_ptr() != out[start:end].data_ptr():
            out[start:end].copy_(acc)
    return out


def _streamed_sum(weights: list[float], features: list[torch.Tensor], device: torch.device, dtype: torch.dtype,
                  stream: torch.cuda.Stream) -> torch.Tensor:
    """``_chunked_sum`` of pinned host features onto a CUDA device: each slice of the K features is copied on
    ``stream`` into one of two staging buffers while the current stream sums the slice before it."""
    compute = torch.cuda.current_stream(device)
    numel = features[-1].numel()
    out = torch.empty(numel, dtype=dtype, device=device)
    rows = len(features)
    staging = _staging(rows, min(_CHUNK, numel), features[-1].dtype, device)
    freed: list[torch.cuda.Event | None] = [None, None]
    stream.wait_stream(compute)  # the staging buffers and out are made on the current stream
    for index, (start, end) in enumerate(_slices(numel)):
        buffer = _rows_of(staging[index % 2], rows, end - start)
        with torch.cuda.stream(stream):
            reader = freed[index % 2]
            if reader is not None:
                stream.wait_event(reader)  # the sum two slices back has read this buffer
            for row, flat in enumerate(features):
                buffer[row].copy_(flat[start:end], non_blocking=True)
            ready = torch.cuda.Event()
            ready.record(stream)
        compute.wait_event(ready)
        acc = torch.zeros(end - start, dtype=torch.float32, device=device)
        for row, weight in enumerate(weights):
            acc.add_(buffer[row], alpha=weight)
        out[start:end].copy_(acc)
        done = torch.cuda.Event()
        done.record(compute)
        freed[index % 2] = done
    for buffer in staging:
        buffer.record_stream(stream)
    return out


def _ridge_inverse(gram: np.ndarray, ridge_lambda: float) -> tuple[np.ndarray, float]:
    """(gram + lambda I)^-1 by Cholesky, adding diagonal jitter while the matrix is singular; also
    returns the jitter that was added (0.0 when none was needed). In NumPy: the system is (M+1) x (M+1),
    where torch's per-call overhead would cost more than the arithmetic."""
    eye = np.eye(gram.shape[0])
    matrix = gram + ridge_lambda * eye
    scale = max(float(matrix.diagonal().mean()), 1.0)
    jitter = 0.0
    for attempt in range(_JITTER_RETRIES + 1):
        try:
            factor = np.linalg.cholesky(matrix + jitter * eye)
        except np.linalg.LinAlgError:
            jitter = scale * _JITTER_START * 10**attempt
            continue
        return np.linalg.solve(factor.T, np.linalg.solve(factor, eye)), jitter
    raise RuntimeError("the ridge system stayed singular after adding jitter; its inputs are not finite")
