"""SpectrumConfig: every setting of the method, validated on construction."""

from __future__ import annotations

import collections
import dataclasses
import json
import math
import numbers
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .checks import check_int, check_real
from .schedule import adaptive_schedule

# Window sizes for_speedup searches, in order of preference: the paper's 2 first, then 1, which is
# the only start that can give more passes than every-other-step after the warm-up.
_SPEEDUP_WINDOW_SIZES = (2, 1)
# for_speedup searches flex_window on this grid: fine enough to reach every pass count for N <= 100.
_FLEX_WINDOW_RESOLUTION = 0.001
FORECASTERS = ("chebyshev", "reuse", "taylor1", "taylor2")
GUIDANCE_FORECASTS = ("paired", "independent")
DIFFERENCE_FORECASTERS = ("reuse", "linear", "chebyshev")
TIME_AXES = ("step", "sigma")
# The version of the JSON that SpectrumConfig.save writes: 1, or 2 for a config with one schedule per denoiser
# (which format 1 readers cannot apply, so they refuse the file by its format). load reads both.
CONFIG_FORMAT = 1
PER_DENOISER_FORMAT = 2
READ_FORMATS = (CONFIG_FORMAT, PER_DENOISER_FORMAT)
# The highest Chebyshev degree accepted. Each degree keeps one more float32 copy of the feature (X^T H) in the
# full fit (history=None),
# so memory grows as (M + 1) x the feature's size (about 50 MB per degree for FLUX at 1024x1024), and
# a fit can only pin down as many coefficients as there are recorded steps (10 to 20 in practice;
# beyond that only ridge_lambda decides them). The paper uses 4.
MAX_DEGREE = 32


def check_history(history: object, degree: int) -> int:
    """``history`` K as an int of at least ``degree`` + 1 (and 2), or a ValueError naming both: with fewer
    recorded points than the M + 1 coefficients the ridge penalty, not the data, would choose the fit."""
    minimum = max(2, degree + 1)
    if isinstance(history, bool) or not isinstance(history, numbers.Integral) or history < minimum:
        raise ValueError(f"history must be an integer >= {minimum} (at least degree + 1 = {degree + 1} for "
                         f"degree={degree}: a fit of {degree + 1} Chebyshev coefficients needs as many recorded "
                         f"steps; and at least 2), got {history!r}; history=None fits every recorded step, as "
                         f"the paper does.")
    return int(history)


STATE_DEVICES = ("cpu",)


def check_state_device(value: object) -> str | None:
    """``value`` as a state device (None, or one of ``STATE_DEVICES``), or a ValueError naming state_device."""
    if value is None:
        return None
    name = str(value) if not isinstance(value, (str, bool, numbers.Number)) else value  # a torch.device too
    if name not in STATE_DEVICES:
        raise ValueError(f"state_device must be None (the features' own device) or 'cpu' (host memory), got {value!r}.")
    return name


@dataclass(frozen=True, kw_only=True)
class SpectrumConfig:
    """Settings of Spectrum (Han et al., CVPR 2026, arXiv 2603.01623).

    Attributes:
        num_inference_steps: N, the number of denoising steps. ``None`` (the default) takes it from the
            pipeline's scheduler at run time, which is what a pipeline user wants; set it when driving a
            bare denoiser by hand.
        warmup_steps: how many first steps always run the network.
        window_size: the window W's starting size; after the warm-up, the network runs once every
            ``floor(W)`` steps.
        flex_window: alpha, how much W grows after each network pass. Larger means fewer passes late in
            sampling; the paper uses 0.75 (14 passes of 50) and 3.0 (10 passes of 50).
        degree: M, the highest Chebyshev polynomial degree of the feature forecast, at most 32
            (``MAX_DEGREE``): in the full fit each degree keeps one more float32 copy of the feature, and the recorded
            steps (10 to 20 in practice) cannot determine more coefficients than that.
        ridge_lambda: lambda, the ridge penalty in C = (X^T X + lambda I)^-1 X^T H.
        blend_weight: w, the forecast is (1 - w) * linear extrapolation + w * Chebyshev forecast.
            w = 1 is the paper's own predictor; the blend came after publication: the authors' README
            recommends w in [0.5, 1] (larger for larger speedups) and their examples use 0.5, the default.
        forecaster: which forecaster fills the skipped steps: ``"chebyshev"`` (Spectrum), or the
            baselines ``"reuse"`` (last feature, FORA-style), ``"taylor1"`` and ``"taylor2"``
            (finite-difference Taylor forecasts of order 1 and 2, TaylorSeer-style).
        forecast_output: forecast the denoiser's output instead of the output head's input. Opt-in
            fallback for models without a known layout; the head is then skipped too.
        guidance_forecast: how the two branches of classifier-free guidance are forecast.
            ``"independent"``: each branch by its own forecaster (the paper). ``"paired"``: the cond
            branch by the forecaster, the uncond branch as that forecast plus a forecast of the
            difference uncond - cond, so the guidance term g (cond - uncond) does not amplify two
            different extrapolation errors. The pairing comes from the pipeline (``cache_context``
            names ``cond``/``uncond``, or the adapter table's CFG layout); where it is unknown the
            branches are forecast independently, with a warning.
        difference_forecaster: in ``"paired"`` mode, the forecaster of the branch difference:
            ``"reuse"`` (the last measured difference), ``"linear"`` (extrapolated from the last two) or
            ``"chebyshev"`` (degree 2, ridge_lambda 10).
        time_axis: what the forecast is a function of. ``"step"``: the step index s (the paper).
            ``"sigma"``: the scheduler's noise level (its ``sigmas``, else its timesteps), mapped
            linearly onto [0, N - 1], so the fit and the extrapolation follow the noise level where a
            sampler spaces it unevenly (FLUX and SD3 shift their sigmas). On an unshifted flow-matching
            schedule the two are the same. Needs a scheduler; a bare loop falls back to ``"step"`` with
            a warning.
        history: K. ``None`` (the default) fits every recorded step, as the paper and the authors' code
            do (the global fit; 4 (M + 1) + 2 b bytes per feature element for b-byte features, 24 for
            bfloat16). An integer K fits the last K recorded steps only (a local fit), keeping those
            features in their own dtype: K b bytes per element, 10 for bfloat16 at K = 5. K must be at
            least ``degree`` + 1, so that the data, not the ridge penalty, choose the coefficients.
        state_device: where the forecaster keeps its state between steps: ``None`` (the default) on the
            features' own device, ``"cpu"`` in host memory (pinned on CUDA, copies overlapped with the
            model), so the accelerator holds none of it: the full fit's moments X^T H and last two
            features, or the window of ``history``. Needs ``forecaster="chebyshev"``.
        compute_steps: an explicit schedule: the 0-based steps that run the network, in place of the
            adaptive window (``warmup_steps``, ``window_size`` and ``flex_window`` are then not used).
            It is planned for one step count, so ``num_inference_steps`` must be set with it; step 0
            must compute (there is nothing to forecast from before it). ``spectrum_cache.calibrate``
            finds one; a generation that runs another step count refuses it.

            Or one schedule per denoiser, ``{"transformer": (0, 1, 4), "transformer_2": (0, 2)}``: each in the
            0-based steps of that denoiser's own trajectory (Wan2.2's low-noise expert counts its first step
            as 0; so does an SDXL refiner run with ``denoising_start``). ``num_inference_steps`` is then the
            pipeline call's step count (what the user passes to the pipeline), and every denoiser of the
            pipeline needs a schedule.
        denoiser_steps: with per-denoiser ``compute_steps`` only: how many steps each denoiser runs in a call
            of ``num_inference_steps`` steps (``{"transformer": 8, "transformer_2": 4}``), checked at every
            run, so a schedule is refused where the split moved (another ``boundary_ratio`` or
            ``denoising_end``). ``None``: only that each schedule's steps exist in the run is checked.
        provenance: what a calibrated schedule was planned for (pipeline, denoiser and scheduler
            classes, hashes of their public configs, the denoisers' weights' identity, resolution,
            guidance, the calibration's cost and score), written by ``calibrate`` and kept by ``save`` /
            ``load``; ``enable_spectrum`` warns when it does not match the model. Not compared by ``==``.

    Every field is keyword-only: ``SpectrumConfig(flex_window=0.75)``, never ``SpectrumConfig(0.75)``
    (the first field is N, so a positional alpha would be read as a step count).
    """

    def __new__(cls, *args: object, **kwargs: object) -> SpectrumConfig:
        # Runs before the generated __init__, whose own message ("takes 1 positional argument but 2
        # were given") names neither the fields nor the fix.
        if args:
            shown = ", ".join(map(repr, args))
            raise TypeError(
                f"SpectrumConfig takes keyword arguments only, e.g. SpectrumConfig(flex_window=0.75) or "
                f"SpectrumConfig.for_speedup(4, 50); got positional {shown}."
            )
        if "alpha" in kwargs:  # the paper's (and the README's) name for the window's growth
            raise TypeError(f"SpectrumConfig has no field alpha: the paper's alpha is flex_window, e.g. "
                            f"SpectrumConfig(flex_window={kwargs['alpha']!r}).")
        return super().__new__(cls)

    num_inference_steps: int | None = None
    warmup_steps: int = 5
    window_size: float = 2
    flex_window: float = 0.75
    degree: int = 4
    ridge_lambda: float = 0.1
    blend_weight: float = 0.5
    forecaster: str = "chebyshev"
    forecast_output: bool = False
    guidance_forecast: str = "independent"
    difference_forecaster: str = "reuse"
    time_axis: str = "step"
    history: int | None = None
    state_device: str | None = None
    compute_steps: tuple[int, ...] | Mapping[str, tuple[int, ...]] | None = None
    denoiser_steps: Mapping[str, int] | None = None
    provenance: Mapping[str, Any] | None = field(default=None, compare=False, hash=False, repr=False)

    def __post_init__(self) -> None:
        # Normalised to Python numbers so numpy scalars behave like the ints and floats they stand for.
        checked = {
            "warmup_steps": check_int("warmup_steps", self.warmup_steps, 1),
            "window_size": check_real("window_size", self.window_size, 1),
            "flex_window": check_real("flex_window", self.flex_window, 0),
            "degree": check_int("degree", self.degree, 0, MAX_DEGREE),
            "ridge_lambda": check_real("ridge_lambda", self.ridge_lambda, 0),
            "blend_weight": check_real("blend_weight", self.blend_weight, 0, 1),
        }
        if self.num_inference_steps is not None:
            checked["num_inference_steps"] = check_int("num_inference_steps", self.num_inference_steps, 1)
        for name, value in checked.items():
            object.__setattr__(self, name, value)
        if self.forecaster not in FORECASTERS:
            raise ValueError(f"forecaster must be one of {', '.join(FORECASTERS)}; got {self.forecaster!r}.")
        if not isinstance(self.forecast_output, bool):
            raise ValueError(f"forecast_output must be True or False, got {self.forecast_output!r}.")
        if self.guidance_forecast not in GUIDANCE_FORECASTS:
            raise ValueError(f"guidance_forecast must be one of {', '.join(GUIDANCE_FORECASTS)}; got {self.guidance_forecast!r}.")
        if self.difference_forecaster not in DIFFERENCE_FORECASTERS:
            raise ValueError(f"difference_forecaster must be one of {', '.join(DIFFERENCE_FORECASTERS)}; "
                             f"got {self.difference_forecaster!r}.")
        if self.history is not None:
            object.__setattr__(self, "history", check_history(self.history, self.degree))
        object.__setattr__(self, "state_device", check_state_device(self.state_device))
        if self.state_device is not None and self.forecaster != "chebyshev":
            raise ValueError(
                f"state_device={self.state_device!r} keeps the Chebyshev fit's state off the device: it needs "
                f"forecaster='chebyshev', got {self.forecaster!r}."
            )
        if self.time_axis not in TIME_AXES:
            raise ValueError(f"time_axis must be one of {', '.join(TIME_AXES)}; got {self.time_axis!r}.")
        if self.denoiser_steps is not None and not isinstance(self.compute_steps, Mapping):
            raise ValueError("denoiser_steps goes with one schedule per denoiser (compute_steps={name: steps}); "
                             f"got denoiser_steps={self.denoiser_steps!r} with compute_steps={self.compute_steps!r}.")
        if isinstance(self.compute_steps, Mapping):
            counts, schedules = check_denoiser_schedules(self.compute_steps, self.denoiser_steps,
                                                         self.num_inference_steps)
            object.__setattr__(self, "compute_steps", schedules)
            object.__setattr__(self, "denoiser_steps", counts)
        elif self.compute_steps is not None:
            object.__setattr__(self, "compute_steps", check_schedule(self.compute_steps, self.num_inference_steps))
        if self.provenance is not None:
            object.__setattr__(self, "provenance", check_provenance(self.provenance))

    def replace(self, **changes: Any) -> SpectrumConfig:
        """A copy with ``changes`` applied (and validated)."""
        return dataclasses.replace(self, **changes)

    @property
    def per_denoiser(self) -> bool:
        """Whether ``compute_steps`` holds one schedule per denoiser."""
        return isinstance(self.compute_steps, Mapping)

    def to_dict(self) -> dict[str, Any]:
        """Every field as JSON-ready values (``compute_steps`` as a list, or a dict of lists per denoiser)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        if isinstance(out["compute_steps"], Mapping):
            out["compute_steps"] = {name: list(steps) for name, steps in out["compute_steps"].items()}
        elif out["compute_steps"] is not None:
            out["compute_steps"] = list(out["compute_steps"])
        if out["denoiser_steps"] is not None:
            out["denoiser_steps"] = dict(out["denoiser_steps"])
        else:
            del out["denoiser_steps"]  # a format 1 file, as earlier versions wrote it
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SpectrumConfig:
        """The config ``to_dict`` gave; unknown keys are refused by name."""
        if not isinstance(data, Mapping):
            raise ValueError(f"a SpectrumConfig is read from a mapping, got {type(data).__name__}.")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown SpectrumConfig fields {unknown}; the fields are {sorted(known)}.")
        values = dict(data)
        if isinstance(values.get("compute_steps"), list):
            values["compute_steps"] = tuple(values["compute_steps"])
        return cls(**values)

    def save(self, path: str | os.PathLike) -> None:
        """Write the config (with its provenance) as JSON; ``SpectrumConfig.load`` reads it back."""
        file_format = PER_DENOISER_FORMAT if self.per_denoiser else CONFIG_FORMAT
        text = json.dumps({"format": file_format, "spectrum_config": self.to_dict()}, indent=2, sort_keys=True)
        with open(path, "w", encoding="utf-8") as file:
            file.write(text + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike) -> SpectrumConfig:
        """The config ``save`` wrote. Raises ValueError naming the file (and the field) when it is not one."""
        name = os.fspath(path)
        try:
            with open(path, encoding="utf-8") as file:
                data = json.load(file)
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ValueError(f"{name} is not a Spectrum schedule file (not JSON: {error}).") from None
        except RecursionError:  # json's decoder recurses once per nested array or object
            raise ValueError(f"{name} is not a Spectrum schedule file (its JSON is nested too deeply to read).") from None
        if not isinstance(data, dict) or "spectrum_config" not in data:
            raise ValueError(f"{name} is not a Spectrum schedule file (no 'spectrum_config' entry).")
        file_format = data.get("format")
        # type() and not ==: JSON's true equals 1 in Python, and 1.0 is not the integer save writes.
        if type(file_format) is not int or file_format not in READ_FORMATS:
            raise ValueError(f"{name} has format {file_format!r}; this version of spectrum-cache reads formats "
                             f"{' and '.join(map(str, READ_FORMATS))} (integers).")
        try:
            return cls.from_dict(data["spectrum_config"])
        except (TypeError, ValueError) as error:
            raise ValueError(f"{name}: {error}") from None

    @classmethod
    def for_speedup(cls, speedup: float, num_inference_steps: int, **overrides: Any) -> SpectrumConfig:
        """The adaptive schedule with the most network passes whose ideal speedup N / passes is still
        at least ``speedup``: ``for_speedup(4, 50)`` gives 12 passes of 50.

        ``overrides`` set the other fields (``blend_weight``, ``degree``, ``warmup_steps``, ...);
        ``window_size`` and ``flex_window`` are chosen here.
        """
        for name in ("window_size", "flex_window", "num_inference_steps"):
            if name in overrides:
                raise ValueError(f"for_speedup chooses {name} itself; do not pass it.")
        base = cls(num_inference_steps=num_inference_steps, **overrides)
        # The config takes None (the pipeline's count); a speedup needs the count here.
        n = check_int("num_inference_steps", base.num_inference_steps, 1)
        fewest_passes = len(adaptive_schedule(n, base.warmup_steps, 2, n))
        try:
            check_real("speedup", speedup, 1, n / fewest_passes)
        except ValueError as error:
            if isinstance(speedup, numbers.Real) and speedup > 1:  # too high: say where the ceiling comes from
                raise ValueError(f"{error} {_speedup_limit_reason(n, base.warmup_steps, fewest_passes)}") from None
            raise
        max_passes = math.floor(n / speedup + 1e-9)

        best: tuple[int, float, float] | None = None  # (passes, window_size, flex_window)
        for window_size in _SPEEDUP_WINDOW_SIZES:
            flex_window = _smallest_flex_window(n, base.warmup_steps, window_size, max_passes)
            if flex_window is None:
                continue
            passes = len(adaptive_schedule(n, base.warmup_steps, window_size, flex_window))
            if best is None or passes > best[0]:
                best = (passes, window_size, flex_window)
        assert best is not None  # window 2 with a huge alpha reaches fewest_passes <= max_passes
        return dataclasses.replace(base, window_size=best[1], flex_window=best[2])


def check_schedule(steps: object, num_inference_steps: int | None) -> tuple[int, ...]:
    """An explicit schedule as a sorted tuple, or a ValueError saying what is wrong with it."""
    if num_inference_steps is None:
        raise ValueError("compute_steps is planned for one step count: set num_inference_steps (N) with it, "
                         "e.g. SpectrumConfig(num_inference_steps=50, compute_steps=(0, 1, 2, 5, ...)).")
    if isinstance(steps, (str, bytes)) or not hasattr(steps, "__iter__"):
        raise ValueError(f"compute_steps must be a sequence of step indices, got {steps!r}.")
    n = num_inference_steps
    values = [check_int("compute_steps entry", s, 0, n - 1) for s in steps]
    # Counted in one pass: a schedule file may list tens of thousands of steps.
    duplicates = sorted(s for s, count in collections.Counter(values).items() if count > 1)
    if duplicates:
        raise ValueError(f"compute_steps lists steps {duplicates} more than once.")
    if 0 not in values:
        raise ValueError("compute_steps must include step 0: the first step has nothing to forecast from, so "
                         f"it runs the network; got {sorted(values)}.")
    return tuple(sorted(values))


class FrozenMapping(Mapping):
    """A read-only mapping that hashes (SpectrumConfig is frozen and hashable): per-denoiser schedules and step
    counts. Equal to a dict with the same items."""

    def __init__(self, items: Mapping[str, Any]) -> None:
        self._items = dict(items)

    def __getitem__(self, key: str) -> Any:
        return self._items[key]

    def __iter__(self) -> Any:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return hash(tuple(sorted(self._items.items())))

    def __repr__(self) -> str:
        return repr(self._items)


def check_denoiser_schedules(schedules: Mapping[Any, Any], counts: object, num_inference_steps: int | None
                             ) -> tuple[FrozenMapping | None, FrozenMapping]:
    """Per-denoiser ``compute_steps`` (and their ``denoiser_steps``) checked: (counts, schedules), or a
    ValueError naming the denoiser's entry and what is allowed."""
    if num_inference_steps is None:
        raise ValueError("compute_steps={denoiser: steps} is planned for pipeline calls of one step count: set "
                         "num_inference_steps (the call's N) with it, e.g. SpectrumConfig(num_inference_steps=40, "
                         "compute_steps={'transformer': (0, 2, 5), 'transformer_2': (0, 3)}).")
    if not schedules:
        raise ValueError("compute_steps={} names no denoiser: give each denoiser's schedule, or None.")
    if counts is not None and not isinstance(counts, Mapping):
        raise ValueError(f"denoiser_steps must map each denoiser's name to its step count, got {counts!r}.")
    if counts is not None and set(counts) != set(schedules):
        raise ValueError(f"denoiser_steps must name the denoisers compute_steps names ({sorted(map(str, schedules))}), "
                         f"got {sorted(map(str, counts))}.")
    checked_counts: dict[str, int] = {}
    checked: dict[str, tuple[int, ...]] = {}
    for name, steps in schedules.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"compute_steps' keys must be denoiser names (strings, e.g. 'transformer'), got {name!r}.")
        runs = num_inference_steps
        if counts is not None:
            runs = check_int(f"denoiser_steps[{name!r}]", counts[name], 1, num_inference_steps)
            checked_counts[name] = runs
        try:
            checked[name] = check_schedule(steps, runs)
        except ValueError as error:
            raise ValueError(f"compute_steps[{name!r}]: {error}") from None
    return (FrozenMapping(checked_counts) if counts is not None else None), FrozenMapping(checked)


# How deep a provenance may nest: calibrate's nest 5 levels (its leaves counted); copy.deepcopy and pickle of a
# config recurse per level and fail near 500 (at Python's default recursion limit).
MAX_PROVENANCE_DEPTH = 32
# The provenance entries that spectrum-cache reads back, with what each must be; other entries are kept as they are.
_RECORD_FIELDS = (("class", (str,)), ("config_hash", (str, type(None))), ("weights", (Mapping, type(None))))


def check_provenance(provenance: object) -> dict[str, Any]:
    """``provenance`` as a dict, or a ValueError naming the entry that is not what ``calibrate`` writes."""
    if not isinstance(provenance, Mapping):
        raise ValueError(f"provenance must be a mapping (a dict), got {type(provenance).__name__}.")
    pending: list[tuple[object, int]] = [(provenance, 1)]
    while pending:  # iterative: a recursive walk would fail on the very nesting it looks for
        value, depth = pending.pop()
        if depth > MAX_PROVENANCE_DEPTH:
            raise ValueError(f"provenance nests deeper than {MAX_PROVENANCE_DEPTH} levels (calibrate's nest 5).")
        if isinstance(value, Mapping):
            pending += [(v, depth + 1) for v in value.values()]
        elif isinstance(value, (list, tuple)):
            pending += [(v, depth + 1) for v in value]

    def check_record(where: str, record: object) -> None:
        if not isinstance(record, Mapping):
            raise ValueError(f"{where} must be a mapping with 'class' and 'config_hash', got {type(record).__name__}.")
        for key, kinds in _RECORD_FIELDS:
            if key in record and not isinstance(record[key], kinds):
                allowed = " or ".join("None" if k is type(None) else "a mapping" if k is Mapping else "a string"
                                      for k in kinds)
                raise ValueError(f"{where}[{key!r}] must be {allowed}, got {type(record[key]).__name__}.")

    denoisers = provenance.get("denoisers")
    if denoisers is not None:
        if not isinstance(denoisers, Mapping):
            raise ValueError("provenance['denoisers'] must map each denoiser's name to its record "
                             f"({{'class': ..., 'config_hash': ...}}), got {type(denoisers).__name__}.")
        for name, record in denoisers.items():
            check_record(f"provenance['denoisers'][{name!r}]", record)
    if provenance.get("scheduler") is not None:
        check_record("provenance['scheduler']", provenance["scheduler"])
    for key, kinds, allowed in (("pipeline", (str,), "a string"), ("cost", (Mapping,), "a mapping")):
        if provenance.get(key) is not None and not isinstance(provenance[key], kinds):
            raise ValueError(f"provenance[{key!r}] must be {allowed}, got {type(provenance[key]).__name__}.")
    return dict(provenance)


def _speedup_limit_reason(n: int, warmup_steps: int, fewest_passes: int) -> str:
    """Why N / fewest_passes is the highest ideal speedup at ``n`` steps, in one sentence."""
    if n <= warmup_steps:
        runs = f"every one of the {n} steps is a warm-up step (warmup_steps={warmup_steps}), which always runs the network"
        fix = f"use more than {warmup_steps} steps or a lower warmup_steps"
    else:
        runs = f"the first {warmup_steps} steps (warmup_steps) always run the network"
        if fewest_passes > warmup_steps:
            runs += f" and the sparsest schedule runs {fewest_passes - warmup_steps} more after them"
        fix = "use more steps for a higher speedup"
    return f"At {n} steps {runs}, so at least {fewest_passes} of {n} run and the highest speedup is " \
           f"{n} / {fewest_passes} = {n / fewest_passes:.4g}; {fix}."


def _smallest_flex_window(n: int, warmup_steps: int, window_size: float, max_passes: int) -> float | None:
    """The smallest alpha on the grid whose schedule runs at most ``max_passes`` passes (bisection:
    passes never increase as alpha grows), or None if even alpha = n runs more."""

    def passes(k: int) -> int:
        return len(adaptive_schedule(n, warmup_steps, window_size, k * _FLEX_WINDOW_RESOLUTION))

    lo, hi = 0, round(n / _FLEX_WINDOW_RESOLUTION)
    if passes(hi) > max_passes:
        return None
    while lo < hi:
        mid = (lo + hi) // 2
        if passes(mid) <= max_passes:
            hi = mid
        else:
            lo = mid + 1
    return round(lo * _FLEX_WINDOW_RESOLUTION, 10)
