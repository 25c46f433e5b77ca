"""The methods the benchmark compares: their names, their settings, and how each is switched on.

Names (the ``--methods`` list):

- ``full``: the full sampler, the reference for every quality metric;
- ``steps-N``: the plain sampler with N steps (as many network passes as a cached method);
- ``spectrum-aALPHA-wW[-dD][-lL][-hK|-hfull]``: Spectrum with flex_window ALPHA and blend_weight W, and optionally
  degree D and ridge_lambda L (default 4 and 0.1) and the fit to the last K recorded steps (default 4) or, with
  ``-hfull``, to every recorded step (the paper's full fit);
- ``spectrum-planned-pK``: Spectrum on a schedule of exactly K passes planned by ``spectrum_cache.calibrate``
  on calibration prompts that are not among the benchmark's (the embedded model's bundled calibration list, or
  ``--calibration-prompts``), once per run; its cost is in the records and the report;
- ``reuse-aALPHA``, ``taylor1-aALPHA``, ``taylor2-aALPHA``: the in-house forecasters on Spectrum's
  schedule for ALPHA (FORA-style reuse, TaylorSeer-style finite differences of order 1 and 2);
- either may end in ``-winW`` and/or ``-warmK`` for another starting window W and warm-up K
  (``-a0.0-win4-warm3`` is a fixed every-4th-step schedule after 3 warm-up steps, TaylorSeer's), and
  in ``-out`` to forecast the denoiser's output instead of the head's input (forecast_output), and in
  ``-pair`` for guidance-aware forecasting (guidance_forecast="paired": the uncond branch as the cond
  forecast plus the last measured difference; ``-pair-linear`` / ``-pair-chebyshev`` forecast that
  difference instead). Without ``-pair`` the branches are forecast independently, as in the paper.
  A final ``-sigma`` makes the forecast a function of the scheduler's noise level instead of the step
  index (time_axis="sigma"); it differs only on a schedule whose sigmas are not linear in the step;
- ``diffusers-taylorseer[-iK]``, ``diffusers-fbc[-tT]``, ``diffusers-mag[-tT][-sK][-rR]``, ``diffusers-sea[-tT]``:
  diffusers' own caches (TaylorSeer refreshing every K steps, First Block Cache, MagCache calibrated on
  one run, SeaCache), with an optional interval K or threshold T; MagCache also takes its cap on
  consecutive skipped steps K (max_skip_steps, default 3) and the share of first steps it always runs R
  (retention_ratio, default 0.2): with the defaults it cannot skip more than 3 of every 4 steps after the
  first 20%, at most 2.5x at 50 steps. The default list adds settings near 3.5x and 5x, with thresholds
  calibrated on the embedded model (DIFFUSERS_AT_SPEEDUPS);
- ``cachedit-CAL-SCHEDULE[-fFbB]``: cache-dit's DBCache (``pip install -e ".[peers]"``, see bench.peers),
  CAL one of ``dbcache`` (no calibrator), ``taylorseer`` (order 1), ``foca``, ``dmd``, and SCHEDULE one of
  ``aALPHA`` (a fixed step mask: exactly the steps Spectrum's schedule for ALPHA runs, so both spend the
  same passes: 14 of 50 at a0.75, 10 of 50 at a3.0), ``slow|medium|fast|ultra`` (cache-dit's own
  predefined masks; ultra is 14 of 50) or ``tT`` (dynamic: residual-difference threshold T, cache-dit's
  other defaults); F and B are the compute blocks run before and after the cached ones (default f1b0:
  cache-dit's default Fn=8 does not fit models with fewer blocks, such as the embedded model's 6). The F
  blocks run on cached steps too: passes count the last block, so they leave out 1 block of 6 per cached
  step on the embedded model (1 of 57 on FLUX.1-dev); the measured speedup includes it.

A method a model cannot run is skipped with its one-line reason (UnsupportedMethod), e.g. the cache-dit
ones without cache-dit installed, or on a transformer cache-dit has no block adapter for.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ..config import SpectrumConfig
from ..schedule import compute_steps
from .peers import CALIBRATORS, MASK_POLICIES, CacheDitSettings, UnsupportedMethod

# The paper's two schedules (Table 1) and the two blend weights the authors recommend.
PAPER_ALPHAS = (0.75, 3.0)
PAPER_BLEND_WEIGHTS = (0.5, 1.0)
IN_HOUSE = ("reuse", "taylor1", "taylor2")
# TaylorSeer as in the paper's Table 1 (N=4 and N=6, order 1).
TAYLORSEER_INTERVALS = (4, 6)
TAYLORSEER_WARMUP = 3  # diffusers' TaylorSeerCacheConfig.disable_cache_before_step default
DIFFUSERS_CACHES = ("taylorseer", "fbc", "mag", "sea")
# diffusers' caches at about 3.5x and 5x ideal speedup (14 and 10 passes of 50, Spectrum's two schedules).
# TaylorSeer refreshing every 7th step runs 10 steps of 50. The thresholds were calibrated on the embedded
# model at 50 steps and its default guidance 4, first 4 bundled prompts (passes per prompt):
#   FBC t0.15: 14, 13, 13, 15 (mean 13.75);   FBC t0.22: 10, 9, 10, 10 (mean 9.75)
#   MagCache t0.3-s12-r0.1: 14 each;          MagCache t1.0-s12-r0.1: 10 each
# (MagCache needs retention_ratio 0.1 and a larger max_skip_steps: its defaults stop at 20 passes.)
# Other models and step counts need their own thresholds; the bench reports the passes it measures.
# SeaCache has no setting here: it runs fail-open (skipping nothing) on the embedded model.
DIFFUSERS_AT_SPEEDUPS = ("diffusers-taylorseer-i7", "diffusers-fbc-t0.15", "diffusers-fbc-t0.22",
                         "diffusers-mag-t0.3-s12-r0.1", "diffusers-mag-t1.0-s12-r0.1")
# cache-dit at Spectrum's two schedules (equal passes, equal steps), and at its own 14-pass preset.
CACHE_DIT_DEFAULTS = tuple(f"cachedit-{c}-a{a}" for c in CALIBRATORS for a in PAPER_ALPHAS) + (
    "cachedit-dbcache-ultra", "cachedit-taylorseer-ultra")

_NUMBER = r"(\d+(?:\.\d*)?|\.\d+)"
_PAIR = r"(-pair(?:-(?:reuse|linear|chebyshev))?)?"
_TAIL = rf"(?:-win{_NUMBER})?(?:-warm(\d+))?(-out)?{_PAIR}(-sigma)?"
# The optional endings of spectrum and the in-house forecasters (_TAIL), as the --methods error spells them.
TAIL_GRAMMAR = "[-winW][-warmK][-out][-pair|-pair-linear|-pair-chebyshev|-pair-reuse][-sigma]"
_PATTERNS = {
    "full": re.compile(r"full"),
    "steps": re.compile(r"steps-(\d+)"),
    "spectrum": re.compile(rf"spectrum-a{_NUMBER}-w{_NUMBER}(?:-d(\d+))?(?:-l{_NUMBER})?(?:-h(\d+|full))?{_TAIL}"),
    "planned": re.compile(r"spectrum-planned-p(\d+)"),
    "in-house": re.compile(rf"({'|'.join(IN_HOUSE)})-a{_NUMBER}{_TAIL}"),
    "diffusers": re.compile(rf"diffusers-({'|'.join(DIFFUSERS_CACHES)})(?:-([it]){_NUMBER})?(?:-s(\d+))?(?:-r{_NUMBER})?"),
    "cachedit": re.compile(rf"cachedit-({'|'.join(CALIBRATORS)})-(?:a{_NUMBER}|({'|'.join(MASK_POLICIES)})|t{_NUMBER})"
                           r"(?:-f(\d+)b(\d+))?"),
}


@dataclass(frozen=True)
class Method:
    """One benchmarked method; ``name`` is canonical (``spectrum-a3-w1`` becomes ``spectrum-a3.0-w1.0``)."""

    name: str
    kind: str  # full | steps | spectrum | diffusers | cachedit (the in-house forecasters are kind "spectrum")
    sampler_steps: int | None = None  # steps-N only; None runs the benchmark's step count
    spectrum: SpectrumConfig | None = None
    cache: str | None = None  # taylorseer | fbc | mag | sea
    cache_value: float | None = None  # TaylorSeer's interval or a cache's threshold
    mag_max_skip: int | None = None  # MagCache's max_skip_steps (None: diffusers' default, 3)
    mag_retention: float | None = None  # MagCache's retention_ratio (None: diffusers' default, 0.2)
    peer: CacheDitSettings | None = None  # cachedit-* only
    planned_passes: int | None = None  # spectrum-planned-pK: calibrated at run time (spectrum is then a placeholder)

    def steps(self, num_inference_steps: int) -> int:
        """How many sampler steps this method runs when the benchmark's step count is given."""
        return self.sampler_steps or num_inference_steps

    def expected_passes(self, num_inference_steps: int) -> int | None:
        """Network passes known in advance (schedules), None for the dynamic diffusers caches."""
        if self.kind in ("full", "steps"):
            return self.steps(num_inference_steps)
        if self.planned_passes is not None:
            return self.planned_passes
        if self.spectrum is not None:
            return len(compute_steps(self.spectrum, num_inference_steps))
        if self.cache == "taylorseer":
            return taylorseer_passes(num_inference_steps, self.taylorseer_interval)
        if self.peer is not None:
            return self.peer.expected_passes(num_inference_steps)
        return None

    @property
    def taylorseer_interval(self) -> int:
        return int(self.cache_value) if self.cache_value is not None else TAYLORSEER_INTERVALS[0]


def taylorseer_passes(num_inference_steps: int, interval: int, warmup: int = TAYLORSEER_WARMUP) -> int:
    """How many steps diffusers' TaylorSeer computes: the first ``warmup``, then one every ``interval``
    (the rule of its ``_measure_should_compute``); the benchmark's pass count checks this."""
    return sum(1 for s in range(num_inference_steps) if s < warmup or (s - warmup - 1) % interval == 0)


def _number(text: str) -> float:
    return float(text)


def _schedule(window: str | None, warmup: str | None, output: str | None,
              pair: str | None = None, sigma: str | None = None) -> tuple[dict[str, Any], str]:
    """SpectrumConfig fields and the canonical name suffix for the optional -winW / -warmK / -out /
    -pair / -sigma parts."""
    fields: dict[str, Any] = {"guidance_forecast": "independent"}
    suffix = ""
    if window is not None:
        fields["window_size"] = _number(window)
        suffix += f"-win{fields['window_size']:g}"
    if warmup is not None:
        fields["warmup_steps"] = int(warmup)
        suffix += f"-warm{fields['warmup_steps']}"
    if output is not None:
        fields["forecast_output"] = True
        suffix += "-out"
    if pair is not None:
        difference = pair.removeprefix("-pair").removeprefix("-") or "reuse"
        fields.update(guidance_forecast="paired", difference_forecaster=difference)
        suffix += "-pair" if difference == "reuse" else f"-pair-{difference}"
    if sigma is not None:
        fields["time_axis"] = "sigma"
        suffix += "-sigma"
    return fields, suffix


def parse_method(name: str) -> Method:
    """The Method for a name; ValueError with the accepted forms if the name is not one."""
    name = name.strip()
    if _PATTERNS["full"].fullmatch(name):
        return Method("full", "full")
    if match := _PATTERNS["steps"].fullmatch(name):
        steps = int(match.group(1))
        if steps < 1:
            raise ValueError(f"method {name!r}: steps-N needs N >= 1")
        return Method(f"steps-{steps}", "steps", sampler_steps=steps)
    if match := _PATTERNS["planned"].fullmatch(name):
        passes = int(match.group(1))
        if passes < 1:
            raise ValueError(f"method {name!r}: spectrum-planned-pK needs K >= 1 passes")
        return Method(f"spectrum-planned-p{passes}", "spectrum", spectrum=SpectrumConfig(), planned_passes=passes)
    try:
        if match := _PATTERNS["spectrum"].fullmatch(name):
            alpha, weight = _number(match.group(1)), _number(match.group(2))
            fit: dict[str, Any] = {}
            if match.group(3) is not None:
                fit["degree"] = int(match.group(3))
            if match.group(4) is not None:
                fit["ridge_lambda"] = _number(match.group(4))
            if match.group(5) is not None:  # -hK: the last K steps only; -hfull: every step, the default
                fit["history"] = None if match.group(5) == "full" else int(match.group(5))
            schedule, suffix = _schedule(*match.group(6, 7, 8, 9, 10))
            config = SpectrumConfig(flex_window=alpha, blend_weight=weight, **fit, **schedule)
            fit_suffix = (f"-d{config.degree}" if "degree" in fit else "") + (
                f"-l{config.ridge_lambda}" if "ridge_lambda" in fit else "") + (
                f"-h{config.history or 'full'}" if "history" in fit else "")
            return Method(f"spectrum-a{alpha}-w{weight}{fit_suffix}{suffix}", "spectrum", spectrum=config)
        if match := _PATTERNS["in-house"].fullmatch(name):
            forecaster, alpha = match.group(1), _number(match.group(2))
            schedule, suffix = _schedule(*match.group(3, 4, 5, 6, 7))
            config = SpectrumConfig(flex_window=alpha, forecaster=forecaster, **schedule)
            return Method(f"{forecaster}-a{alpha}{suffix}", "spectrum", spectrum=config)
    except ValueError as error:  # e.g. a blend weight above 1
        raise ValueError(f"method {name!r}: {error}") from None
    if match := _PATTERNS["diffusers"].fullmatch(name):
        cache, letter, value, skip, retention = match.groups()
        expected = "i" if cache == "taylorseer" else "t"
        if letter is not None and letter != expected:
            raise ValueError(f"method {name!r}: diffusers-{cache} takes -{expected}<value>")
        if (skip is not None or retention is not None) and cache != "mag":
            raise ValueError(f"method {name!r}: only diffusers-mag takes -sK (max_skip_steps) and -rR (retention_ratio)")
        number = None if value is None else _number(value)
        if cache == "taylorseer" and number is not None and (number != int(number) or number < 1):
            raise ValueError(f"method {name!r}: the TaylorSeer interval must be an integer >= 1")
        max_skip = None if skip is None else int(skip)
        ratio = None if retention is None else _number(retention)
        if max_skip is not None and max_skip < 1:
            raise ValueError(f"method {name!r}: MagCache's max_skip_steps must be >= 1")
        if ratio is not None and not 0 <= ratio <= 1:
            raise ValueError(f"method {name!r}: MagCache's retention_ratio must be in [0, 1]")
        suffix = "" if number is None else f"-{letter}{int(number) if cache == 'taylorseer' else number}"
        suffix += ("" if max_skip is None else f"-s{max_skip}") + ("" if ratio is None else f"-r{ratio}")
        return Method(f"diffusers-{cache}{suffix}", "diffusers", cache=cache, cache_value=number,
                      mag_max_skip=max_skip, mag_retention=ratio)
    if match := _PATTERNS["cachedit"].fullmatch(name):
        calibrator, alpha_text, policy, threshold, fn, bn = match.groups()
        try:
            settings = CacheDitSettings(
                calibrator, alpha=None if alpha_text is None else _number(alpha_text), policy=policy,
                threshold=None if threshold is None else _number(threshold),
                **({} if fn is None else {"fn": int(fn), "bn": int(bn)}))
        except ValueError as error:
            raise ValueError(f"method {name!r}: {error}") from None
        return Method(settings.name, "cachedit", peer=settings)
    raise ValueError(
        f"unknown method {name!r}; use full, steps-N, spectrum-aALPHA-wW[-dD][-lL][-hK|-hfull]{TAIL_GRAMMAR}, spectrum-planned-pK, "
        f"{{reuse|taylor1|taylor2}}-aALPHA{TAIL_GRAMMAR}, "
        f"diffusers-taylorseer[-iK], diffusers-fbc[-tT], diffusers-mag[-tT][-sK][-rR], diffusers-sea[-tT], "
        f"cachedit-{{{'|'.join(CALIBRATORS)}}}-{{aALPHA|{'|'.join(MASK_POLICIES)}|tT}}[-fFbB]"
    )


def parse_methods(text: str, num_inference_steps: int) -> list[Method]:
    """A comma-separated list, deduplicated, with ``full`` always first (every metric needs it)."""
    methods: list[Method] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        method = parse_method(part)
        if method.name not in (m.name for m in methods):
            methods.append(method)
    if not methods:
        raise ValueError("--methods is empty")
    methods.sort(key=lambda m: m.kind != "full")
    if methods[0].kind != "full":
        methods.insert(0, Method("full", "full"))
    return methods


def default_methods(num_inference_steps: int) -> list[Method]:
    """Everything: full, the plain samplers matched to the fixed schedules' passes, Spectrum at the paper's settings, the in-house
    forecasters on the same schedules, diffusers' caches (at their defaults and near 3.5x and 5x), and cache-dit
    (skipped with a note where it is not installed)."""
    names = ["full"]
    schedules = [SpectrumConfig(flex_window=alpha) for alpha in PAPER_ALPHAS]
    mirrored = {len(compute_steps(c, num_inference_steps)) for c in schedules}
    mirrored |= {taylorseer_passes(num_inference_steps, k) for k in TAYLORSEER_INTERVALS}
    names += [f"steps-{p}" for p in sorted(mirrored, reverse=True) if p < num_inference_steps]
    names += [f"spectrum-a{a}-w{w}{pair}" for a in PAPER_ALPHAS for w in PAPER_BLEND_WEIGHTS for pair in ("", "-pair")]
    names += [f"{f}-a{a}" for f in IN_HOUSE for a in PAPER_ALPHAS]
    names += [f"diffusers-taylorseer-i{k}" for k in TAYLORSEER_INTERVALS]
    names += ["diffusers-fbc", "diffusers-mag", "diffusers-sea", *DIFFUSERS_AT_SPEEDUPS]
    names += list(CACHE_DIT_DEFAULTS)
    return [parse_method(n) for n in names]


def denoiser(pipe: Any) -> Any:
    """The pipeline's denoiser (``transformer`` or ``unet``)."""
    for name in ("transformer", "unet"):
        module = getattr(pipe, name, None)
        if module is not None:
            return module
    raise UnsupportedMethod(f"{type(pipe).__name__} has neither a transformer nor a unet")


def diffusers_cache_config(method: Method, num_inference_steps: int, mag_ratios: list[float] | None) -> Any:
    """The diffusers cache config for a ``diffusers-*`` method."""
    import diffusers

    value = method.cache_value
    if method.cache == "taylorseer":
        # Lite mode skips whole blocks and forecasts the output projection: the block-level skip that
        # the paper's TaylorSeer rows measure (the default mode only forecasts attention outputs).
        return diffusers.TaylorSeerCacheConfig(
            cache_interval=method.taylorseer_interval, disable_cache_before_step=TAYLORSEER_WARMUP, max_order=1, use_lite_mode=True
        )
    if method.cache == "fbc":
        return diffusers.FirstBlockCacheConfig() if value is None else diffusers.FirstBlockCacheConfig(threshold=value)
    if method.cache == "mag":
        if mag_ratios is None:
            raise UnsupportedMethod("MagCache has no calibration")
        extra: dict[str, Any] = {} if value is None else {"threshold": value}
        if method.mag_max_skip is not None:
            extra["max_skip_steps"] = method.mag_max_skip
        if method.mag_retention is not None:
            extra["retention_ratio"] = method.mag_retention
        return diffusers.MagCacheConfig(mag_ratios=mag_ratios, num_inference_steps=num_inference_steps, **extra)
    if method.cache == "sea":
        return diffusers.SeaCacheConfig() if value is None else diffusers.SeaCacheConfig(threshold=value)
    raise AssertionError(method.cache)


@contextlib.contextmanager
def applied(pipe: Any, method: Method, num_inference_steps: int, mag_ratios: list[float] | None = None,
            guidance_scale: float | None = None) -> Iterator[None]:
    """Switch ``method`` on for the duration of one generation, and off again (fresh state every time,
    so nothing carries over between prompts). Raises UnsupportedMethod where the model cannot run it.
    ``guidance_scale`` is the one the generation uses (None: the pipeline's default); cache-dit needs
    it to know whether the pipeline calls the transformer once or twice a step."""
    if method.kind in ("full", "steps"):
        yield
        return
    if method.peer is not None:
        from .peers import cache_dit_applied

        with cache_dit_applied(pipe, method.peer, num_inference_steps, guidance_scale):
            yield
        return
    if method.spectrum is not None:
        from ..integrations import disable_spectrum, enable_spectrum

        try:
            enable_spectrum(pipe, method.spectrum)
        except (ValueError, TypeError) as error:
            raise UnsupportedMethod(str(error).splitlines()[0]) from None
        try:
            yield
        finally:
            disable_spectrum(pipe)
        return
    module = denoiser(pipe)
    if not hasattr(module, "enable_cache"):
        raise UnsupportedMethod(f"{type(module).__name__} has no diffusers cache support (enable_cache)")
    config = diffusers_cache_config(method, num_inference_steps, mag_ratios)
    try:
        module.enable_cache(config)
    except Exception as error:  # diffusers raises several types for "this model has no such cache"
        with contextlib.suppress(Exception):
            module.disable_cache()
        raise UnsupportedMethod(f"{type(error).__name__}: {(str(error).strip().splitlines() or [''])[0]}") from None
    try:
        yield
    finally:
        module.disable_cache()
