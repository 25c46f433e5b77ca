"""What one generation costs: network passes, wall time, peak memory; and MagCache's calibration."""

from __future__ import annotations

import contextlib
import logging
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from diffusers.models.cache_utils import CacheMixin

_PROC_STATUS = Path("/proc/self/status")
_PROC_CLEAR_REFS = Path("/proc/self/clear_refs")


def _first_leaf_with_parameters(module: torch.nn.Module) -> torch.nn.Module:
    for sub in module.modules():
        if not list(sub.children()) and any(True for _ in sub.parameters(recurse=False)):
            return sub
    return module


def probe_module(denoiser: torch.nn.Module) -> torch.nn.Module:
    """An inner module of the denoiser's last block: it runs exactly when the block really runs.

    Caches (Spectrum, diffusers' hooks) replace a skipped block's forward, but a forward hook on the
    block itself still fires; a leaf inside it does not. The last block is used because First Block
    Cache always runs the first one.
    """
    block_lists = [m for name, m in denoiser.named_children() if "block" in name and isinstance(m, torch.nn.ModuleList) and len(m)]
    if not block_lists:
        return _first_leaf_with_parameters(denoiser)
    return _first_leaf_with_parameters(block_lists[-1][-1])


@dataclass
class PassCounter:
    """Counts denoiser calls and real block passes during a ``with`` block.

    Its hook sits inside a block that forecast steps skip, on purpose: that is how it tells a pass from a
    forecast. Spectrum warns about hooks on skipped modules; that warning about this hook (it names
    ``count_pass``) is not for the user, so it is silenced while the counter is on, and no other.
    """

    denoiser: torch.nn.Module
    calls: int = 0
    block_passes: int = 0
    _handles: list[Any] = field(default_factory=list)
    _quiet: Any = None

    def __enter__(self) -> PassCounter:
        def count_call(*_: Any) -> None:
            self.calls += 1

        def count_pass(*_: Any) -> None:
            self.block_passes += 1

        from ..integrations import SpectrumWarning

        self._quiet = warnings.catch_warnings()
        self._quiet.__enter__()
        warnings.filterwarnings("ignore", message=r".*\bcount_pass\b", category=SpectrumWarning)
        self._handles = [
            self.denoiser.register_forward_hook(count_call),
            probe_module(self.denoiser).register_forward_hook(count_pass),
        ]
        return self

    def __exit__(self, *_: object) -> None:
        for handle in self._handles:
            handle.remove()
        if self._quiet is not None:
            self._quiet.__exit__(None, None, None)
            self._quiet = None

    def passes(self, sampler_steps: int) -> float:
        """Network passes per trajectory: with CFG the denoiser runs twice a step, so passes are counted
        per call and scaled to the sampler's steps (the full sampler gives exactly its step count)."""
        return self.block_passes * sampler_steps / self.calls if self.calls else 0.0


def timed(device: torch.device, fn: Callable[[], Any]) -> tuple[Any, float]:
    """(fn(), seconds): CUDA events on a GPU (they time the queued kernels, not the Python launch),
    perf_counter elsewhere."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        result = fn()
        end.record()
        torch.cuda.synchronize(device)
        return result, start.elapsed_time(end) / 1000
    start_time = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start_time


def _rss_high_water_kib() -> int | None:
    for line in _PROC_STATUS.read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return None


@contextlib.contextmanager
def peak_memory(device: torch.device) -> Iterator[dict[str, Any]]:
    """Yields a dict filled on exit with ``peak_mib`` and ``kind``, which says what was measured:

    - ``cuda_max_allocated``: torch.cuda.max_memory_allocated, reset before the run;
    - ``rss_peak``: the process's peak resident set size during the run (Linux: VmHWM, reset
      through /proc/self/clear_refs before the run), which includes the model and the libraries;
    - ``rss_peak_lifetime``: where the reset is not possible, the peak since the process started;
    - ``unavailable`` (``peak_mib`` None): neither is possible (Windows).

    tracemalloc is not used: it sees Python allocations only, not torch's tensors.
    """
    result: dict[str, Any] = {}
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        yield result
        result.update(peak_mib=torch.cuda.max_memory_allocated(device) / 2**20, kind="cuda_max_allocated")
        return
    resettable = False
    if sys.platform.startswith("linux"):
        try:
            _PROC_CLEAR_REFS.write_text("5")  # "5" resets the peak RSS counter (Linux >= 4.0)
            resettable = True
        except OSError:
            pass
    yield result
    hwm = _rss_high_water_kib() if resettable else None
    if hwm is not None:
        result.update(peak_mib=hwm / 1024, kind="rss_peak")
    else:
        lifetime = lifetime_peak_rss_mib()
        result.update(peak_mib=lifetime, kind="rss_peak_lifetime" if lifetime is not None else "unavailable")


def lifetime_peak_rss_mib() -> float | None:
    """The process's peak resident set size since it started; None where the platform has no
    ``resource`` module (Windows)."""
    try:
        import resource  # POSIX only
    except ImportError:
        return None
    # ru_maxrss is KiB on Linux, bytes on macOS.
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextlib.contextmanager
def captured_log(name: str, level: int) -> Iterator[list[str]]:
    """Collect a diffusers logger's messages at ``level`` and above, without printing them."""
    logger = logging.getLogger(name)
    handler = _Collect()
    old_level, old_propagate = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
    try:
        yield handler.messages
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
        logger.propagate = old_propagate


MAG_CALIBRATION_PREFIX = "MagCache Calibration Results:"


def calibrate_mag_cache(denoiser: CacheMixin, num_inference_steps: int, run: Callable[[], Any]) -> list[float]:
    """MagCache's calibration mode on one generation (``run``): the per-step magnitude ratios of the
    first trajectory (the conditional branch under CFG).

    diffusers reports them only through its log and stdout, and its log drops INFO records on every
    rank but 0 of a distributed run, so both are captured and either one serves.
    """
    import io

    from diffusers import MagCacheConfig

    stdout = io.StringIO()
    denoiser.enable_cache(MagCacheConfig(calibrate=True, num_inference_steps=num_inference_steps))
    try:
        with captured_log("diffusers.hooks.mag_cache", logging.INFO) as messages, contextlib.redirect_stdout(stdout):
            run()
    finally:
        denoiser.disable_cache()
    candidates = [m[len(MAG_CALIBRATION_PREFIX):] for m in messages if m.startswith(MAG_CALIBRATION_PREFIX)]
    candidates += stdout.getvalue().splitlines()
    for text in candidates:
        text = text.strip()
        if text.startswith("[") and text.endswith("]") and len(text) > 2:
            ratios = [float(x) for x in text.strip("[]").split(",")]
            if len(ratios) == num_inference_steps:
                return ratios
    raise RuntimeError("MagCache calibration reported no ratios")
