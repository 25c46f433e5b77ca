"""``calibrate``: plan where a pipeline's network passes go, with Spectrum's own forecaster.

1. **Record.** One full run per calibration prompt (Spectrum enabled with every step computing, which gives
   the plain sampler's output) records (``recording``) each branch's feature at every step, a fixed random
   subsample of its elements (the forecast treats every element alike), and the sampler's step sizes.
2. **Search.** ``planner.search_schedule`` finds (per denoiser, over the steps it runs, at each share of the
   passes it could get: ``experts``), for each fit (the config's own and ``FITS``), each blend weight w tried
   and each of the planner's scores (``INCOHERENT_SHARES``), the schedule of exactly ``passes`` steps with the
   lowest forecast error on those trajectories (an open-loop score, computed from the trajectories' Gram
   matrices, for a batch of schedules at once: about 0.1 ms per schedule).
3. **Check.** Every candidate (per fit and score, the planned schedule of the w that scored best; and the
   paper's adaptive schedule with the same passes, with the config's fit, for each w) runs end to end on every calibration prompt with the same noise; the one
   whose output is closest to the full run's (mean PSNR) wins. The paper's schedule is a candidate, so
   the result is never worse than it on the calibration prompts.

The cost is one full run per prompt plus ``passes / N`` of one per candidate and prompt, and the search
(seconds); it is recorded in the returned config's ``provenance`` (``cost``: passes, and the seconds of each
phase). One progress bar counts the pipeline runs; the pipeline's own bars are hidden meanwhile and its
settings put back after.
"""

from __future__ import annotations

import contextlib
import datetime
import math
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from .. import __version__
from ..config import SpectrumConfig, check_int
from ..forecast import make_forecaster
from ..planner import ForecastCache
from ..schedule import adaptive_schedule
from .experts import Expert, Plan, best_split, budgets, check_passes, make_expert, proportional_splits, search_expert
from .api import denoiser_hook, disable_spectrum, enable_spectrum, find_denoisers, spectrum_summary
from .compat import progress_bars_hidden
from .generation import Generation
from .provenance import describe
from .recording import Recording, recording
from .steps import ModularPipeline

# The blend weights tried: the paper's w = 1 and the authors' later [0.5, 1] range.
BLEND_WEIGHTS = (0.5, 0.75, 1.0)
# At most this many elements of each feature are kept per step while recording (a fixed random subset).
MAX_RECORDED_ELEMENTS = 1 << 16
# The planner's scores tried: the share of per-step error in each (the rest is the first-order error of the
# final state). Each finds its own schedule; the end-to-end check picks among them. On the embedded model's
# calibration prompts no one share planned best in every cell (docs/planning.md).
INCOHERENT_SHARES = (0.0, 0.5, 1.0)
METRIC = "psnr"
AS_CONFIGURED = "as configured"
# The fits calibrate plans for besides the config's own: a local Chebyshev fit (degree 2 over the last 3
# recorded steps, almost no ridge), close to a quadratic through them, blended with the linear step.
FITS: Mapping[str, Mapping[str, Any]] = MappingProxyType(
    {"local": MappingProxyType({"history": 3, "degree": 2, "ridge_lambda": 1e-4})})


def calibrate(pipe: Any, prompts: Sequence[str | Mapping[str, Any]], *, passes: int, num_inference_steps: int,
              config: SpectrumConfig | None = None, seed: int = 0,
              blend_weights: Sequence[float] | None = BLEND_WEIGHTS,
              fits: Mapping[str, Mapping[str, Any]] | None = FITS, progress: bool = True,
              **call_kwargs: Any) -> SpectrumConfig:
    """A ``SpectrumConfig`` for ``pipe`` whose schedule (``compute_steps``) runs the network on exactly
    ``passes`` of ``num_inference_steps`` steps, chosen to make Spectrum's output closest to the full
    sampler's on ``prompts``.

    Every trajectory the call runs is planned: a pipeline whose denoisers split the steps (Wan2.2's experts)
    gets one schedule per denoiser, each over that denoiser's own steps, with ``passes`` shared between them
    (the planner decides how many each gets); a denoiser that runs part of the call (SDXL's ``denoising_end``,
    a refiner's ``denoising_start``, img2img strength below 1) gets a schedule over the steps it runs. Those
    configs have ``compute_steps={denoiser: steps}`` and ``denoiser_steps``; a single denoiser that runs every
    step gets one schedule, as before. Samplers that call the denoiser more than once per step plan the steps
    (docs/how-it-works.md); a trajectory that starts after step 0 (Heun's second call from step 1) computes
    its first step.

    Args:
        pipe: a diffusers pipeline (classic or modular) that ``enable_spectrum`` supports, with Spectrum not
            enabled on it (calibrate enables and removes it itself).
        prompts: the calibration prompts: strings (passed as ``prompt=``) or mappings of call arguments
            (``{"prompt_embeds": ..., "pooled_prompt_embeds": ...}``). Keep them apart from the prompts you
            evaluate on.
        passes: K, how many steps run the network per CFG branch over the whole pipeline call (over all its
            denoisers together).
        num_inference_steps: N, the pipeline call's step count (what is passed to the pipeline).
        config: the other settings (forecaster, degree, lambda, w, history, ...); the default config if None.
        seed: noise of prompt i comes from ``torch.Generator().manual_seed(seed + i)``, unless
            ``call_kwargs`` has a ``generator``, which is then rewound to its starting state for every run
            and left in it.
        blend_weights: the w values to plan for (the winner's is returned); None keeps ``config``'s.
        fits: other Chebyshev fits to plan for besides ``config``'s own, by name: SpectrumConfig fields
            (``history``, ``degree``, ``ridge_lambda``) that replace ``config``'s. The default adds a local fit
            (degree 2 over the last 3 recorded steps), which planned better than the paper's full fit at 14 of
            50 passes on the test bed (docs/planning.md). None plans ``config``'s fit only.
        progress: show one progress bar over the calibration's pipeline runs (the pipeline's own bars are
            hidden during calibrate either way, and its settings restored after).
        call_kwargs: passed to every pipeline call (``guidance_scale``, ``height``, ``width``, ...). The
            output is compared as latents (``output_type="latent"``, a modular pipeline's ``output="latents"``)
            unless you set ``output_type`` / ``output``.

    Raises ValueError for bad arguments (naming them), if Spectrum is already enabled on ``pipe``, or if no
    schedule runs exactly ``passes`` (each denoiser's first step computes; the error names the steps each runs).
    """
    started = time.perf_counter()
    base = SpectrumConfig() if config is None else config
    if not isinstance(base, SpectrumConfig):
        raise TypeError(f"config must be a SpectrumConfig, got {type(base).__name__}.")
    n = check_int("num_inference_steps", num_inference_steps, 1)
    k = check_int("passes", passes, 1, n)
    prompt_calls = _prompt_calls(prompts)
    # Prompt i's noise is seeded with seed + i, and torch seeds are 64-bit unsigned.
    seed = check_int("seed", seed, 0, 2**64 - len(prompt_calls))
    weights = (base.blend_weight,) if blend_weights is None else _checked_weights(blend_weights)
    denoisers = _denoisers_to_calibrate(pipe)
    if "prompt" in call_kwargs:
        raise ValueError("calibrate sets prompt itself; pass it as prompts=[...].")
    base = base.replace(num_inference_steps=n, compute_steps=None, denoiser_steps=None, provenance=None)
    fit_configs = _fit_configs(base, fits)
    runner = _Runner(pipe, n, seed, call_kwargs, prompt_calls, progress)
    seconds: dict[str, float] = {}
    try:
        with progress_bars_hidden(pipe):
            with _timed(seconds, "record"):
                references, experts = _record(runner, base, [name for name, _ in denoisers])
            check_passes(experts, k)
            form = _PlanForm.of(experts, n)
            runner.bar.set_description("calibrate: schedule search")
            with _timed(seconds, "search"):
                paper, candidates, searched = _search(experts, fit_configs, weights, k, base, form)
            runner.bar.total = len(prompt_calls) * (1 + len(candidates))
            runner.bar.set_description("calibrate: candidate runs")
            with _timed(seconds, "check"):
                results = _check(runner, candidates, fit_configs, references, paper, form)
    finally:
        runner.bar.close()
    best = max(results, key=lambda r: r["mean_psnr"])  # the first of equals: the baseline comes first
    provenance = _provenance(runner, denoisers, k, base, experts, form, paper, best, results, searched,
                             seconds, started)
    return fit_configs[best["fit"]].replace(**form.fields(form.plan(best["compute_steps"])),
                                           blend_weight=best["blend_weight"], provenance=provenance)


def _denoisers_to_calibrate(pipe: Any) -> list[tuple[str, torch.nn.Module]]:
    """The pipeline's denoisers (component name, module); refuses a bare denoiser, a pipeline without one and
    one with Spectrum enabled."""
    if isinstance(pipe, torch.nn.Module):
        raise TypeError("calibrate takes a pipeline (it runs whole generations), not a bare denoiser.")
    denoisers = find_denoisers(pipe, "calibrate")
    if not denoisers:
        raise ValueError(f"{type(pipe).__name__} has no denoiser to calibrate.")
    if any(denoiser_hook(module) is not None for _, module in denoisers):
        raise ValueError("Spectrum is already enabled on this pipeline; call disable_spectrum(pipe) before calibrate "
                         "(it enables Spectrum with each schedule it tries, then removes it).")
    return denoisers


def _fit_configs(base: SpectrumConfig, fits: Mapping[str, Mapping[str, Any]] | None) -> dict[str, SpectrumConfig]:
    """The configs planned for, by fit name: ``base`` as configured, and each of ``fits`` applied to it (the fits are
    the Chebyshev forecaster's; other forecasters have none)."""
    fit_configs = {AS_CONFIGURED: base}
    if base.forecaster == "chebyshev":
        for name, fields in (fits or {}).items():
            if name == AS_CONFIGURED or not isinstance(fields, Mapping):
                raise ValueError(f"fits must map names other than {AS_CONFIGURED!r} to SpectrumConfig fields, got "
                                 f"{name!r}: {fields!r}.")
            fit_configs[name] = base.replace(**fields)
    return fit_configs


@contextlib.contextmanager
def _timed(seconds: dict[str, float], phase: str) -> Iterator[None]:
    """Put the seconds the block took in ``seconds[phase]``."""
    start = time.perf_counter()
    yield
    seconds[phase] = time.perf_counter() - start


def _record(runner: _Runner, base: SpectrumConfig, order: list[str]) -> tuple[list[torch.Tensor], list[Expert]]:
    """1. Record: the full run of every prompt, its output (the reference the candidates are scored against) and
    its features; one ``Expert`` per denoiser that ran, in ``order``.

    Every step computes (the warm-up spans the run), whatever step count each denoiser runs: each denoiser is then
    planned over the steps it runs (Wan2.2's experts, an SDXL base's denoising_end, a refiner's range).
    num_inference_steps is left to the pipeline, which says how many steps each denoiser runs."""
    recorder = _Recorder(order, runner.seed)
    references: list[torch.Tensor] = []
    enable_spectrum(runner.pipe, base.replace(warmup_steps=runner.num_steps, num_inference_steps=None))
    try:
        for index in range(len(runner.prompt_calls)):
            with recording(runner.pipe, keep=recorder.keep) as recorded:
                references.append(runner.run(index))
            recorder.add(index, recorded)
    finally:
        disable_spectrum(runner.pipe)
    return references, recorder.experts()


def _search(experts: list[Expert], fit_configs: Mapping[str, SpectrumConfig], weights: Sequence[float], k: int,
            base: SpectrumConfig, form: _PlanForm
            ) -> tuple[Plan | None, list[tuple[Plan, str, float]], dict[str, dict[str, Any]]]:
    """2. Search, for each fit, w and score: each expert's best schedule at each budget it could get, and the split
    of the passes between experts whose weighted scores sum lowest.

    Returns the paper's plan (None where there is none), the candidates to check (plan, fit name, w: the paper's
    plan first, at the config's w, then per fit the paper's plan at each w for the config's own fit and per score
    the plan of the w that scored best; each once), and every search's record for the provenance."""
    paper = _paper_plan(experts, k, base)
    candidates: list[tuple[Plan, str, float]] = [(paper, AS_CONFIGURED, base.blend_weight)] if paper else []
    searched: dict[str, dict[str, Any]] = {}
    ranges = budgets(experts, k)
    # Each search starts from the paper's schedule at its budget: the same for every fit, w and score mix.
    seeds = {(e.name, budget): _seeds(e, budget, base) for e, allowed in zip(experts, ranges) for budget in allowed}
    for fit_name, fit in fit_configs.items():
        best: dict[float, tuple[float, Plan, float]] = {}  # per score mix: the best w's (score, plan, w)
        for w in weights:
            makers = {e.name: _factory(fit, w, e) for e in experts}
            caches = {e.name: ForecastCache(makers[e.name], e.num_steps) for e in experts}
            for share in INCOHERENT_SHARES:
                results_by_budget = [
                    {budget: search_expert(e, makers[e.name], share, budget, seeds[e.name, budget], caches[e.name])
                     for budget in allowed}
                    for e, allowed in zip(experts, ranges)]
                score, split = best_split(experts, results_by_budget, k)
                plan = tuple((e.name, results_by_budget[i][b].schedule) for i, (e, b) in enumerate(zip(experts, split)))
                # The paper's score where one search scored it (one expert: its seed); per-expert seeds differ from
                # the paper's plan of a split.
                seeded = results_by_budget[0][k].seed_scores if len(experts) == 1 else ()
                searched[f"{fit_name} w={w:g} incoherent={share:g}"] = {
                    "schedule": form.as_json(plan), "score": score, "paper_score": seeded[0] if seeded else None,
                    "evaluations": sum(results_by_budget[i][b].evaluations for i, b in enumerate(split))}
                if share not in best or score < best[share][0]:
                    best[share] = (score, plan, w)
            if paper and fit_name == AS_CONFIGURED:
                candidates.append((paper, fit_name, w))
        candidates += [(plan, fit_name, w) for _, plan, w in best.values()]
    return paper, list(dict.fromkeys(candidates)), searched


def _check(runner: _Runner, candidates: list[tuple[Plan, str, float]], fit_configs: Mapping[str, SpectrumConfig],
           references: list[torch.Tensor], paper: Plan | None, form: _PlanForm) -> list[dict[str, Any]]:
    """3. Check: every candidate (plan, fit name, w) run end to end on every prompt with the full run's noise, and
    its output's PSNR against the full run's."""
    results: list[dict[str, Any]] = []
    for plan, fit_name, w in candidates:
        enable_spectrum(runner.pipe, fit_configs[fit_name].replace(**form.fields(plan), blend_weight=w))
        try:
            scores = [output_psnr(runner.run(index), reference) for index, reference in enumerate(references)]
        finally:
            disable_spectrum(runner.pipe)
        kind = "paper" if paper and plan == paper else "planned"
        results.append({"compute_steps": form.as_json(plan), "fit": fit_name, "blend_weight": w, "kind": kind,
                        "psnr": scores, "mean_psnr": _mean(scores)})
    return results


def _provenance(runner: _Runner, denoisers: list[tuple[str, torch.nn.Module]], passes: int, base: SpectrumConfig,
                experts: list[Expert], form: _PlanForm, paper: Plan | None, best: dict[str, Any],
                results: list[dict[str, Any]], searched: dict[str, dict[str, Any]], seconds: dict[str, float],
                started: float) -> dict[str, Any]:
    """What the returned config records of its calibration (``SpectrumConfig.provenance``)."""
    call_kwargs = runner.call_kwargs
    paper_results = [r for r in results if r["kind"] == "paper" and r["fit"] == AS_CONFIGURED
                     and r["blend_weight"] == base.blend_weight]
    return {
        **describe(runner.pipe, denoisers),
        "num_inference_steps": runner.num_steps,
        "passes": passes,
        "height": call_kwargs.get("height"),
        "width": call_kwargs.get("width"),
        "guidance_scale": _number(call_kwargs.get("guidance_scale")),
        "true_cfg_scale": _number(call_kwargs.get("true_cfg_scale")),
        "num_frames": call_kwargs.get("num_frames"),
        "calibration_prompts": len(runner.prompt_calls),
        "seed": runner.seed if "generator" not in call_kwargs else None,
        "metric": METRIC,
        "mean_psnr": best["mean_psnr"],
        "fit": best["fit"],
        "paper_schedule": form.as_json(paper) if paper else None,
        # Each denoiser's steps: how many it runs, and which steps of the pipeline call those are.
        "steps_run": {e.name: {"steps": e.num_steps, "call_steps": list(e.call_steps) if e.call_steps else None}
                      for e in experts},
        "paper_mean_psnr": paper_results[0]["mean_psnr"] if paper_results else None,
        "candidates": results,
        "search": searched,
        "cost": {"network_passes": runner.passes, "full_run_passes": runner.full_passes,
                 "seconds": round(time.perf_counter() - started, 3),
                 # where the seconds went: the full runs, the schedule search, the candidates' runs
                 **{f"{name}_seconds": round(value, 3) for name, value in seconds.items()}},
        "spectrum_cache_version": __version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


@dataclass
class _PlanForm:
    """How a plan (per denoiser, its schedule) is written in a config and in the provenance: one schedule for a
    single denoiser that runs the whole call (a format-1 file, as before); else one per denoiser, each over its
    own steps."""

    experts: list[Expert]
    whole: bool

    @classmethod
    def of(cls, experts: list[Expert], num_steps: int) -> _PlanForm:
        return cls(experts, len(experts) == 1 and experts[0].num_steps == num_steps)

    def fields(self, plan: Plan) -> dict[str, Any]:
        """The SpectrumConfig fields that run ``plan``."""
        if self.whole:
            return {"compute_steps": plan[0][1], "denoiser_steps": None}
        return {"compute_steps": dict(plan), "denoiser_steps": {e.name: e.num_steps for e in self.experts}}

    def as_json(self, plan: Plan) -> list[int] | dict[str, list[int]]:
        return list(plan[0][1]) if self.whole else {name: list(steps) for name, steps in plan}

    def plan(self, written: list[int] | dict[str, list[int]]) -> Plan:
        """The plan that ``as_json`` wrote as ``written``."""
        if isinstance(written, list):
            return ((self.experts[0].name, tuple(written)),)
        return tuple((e.name, tuple(written[e.name])) for e in self.experts)


def _factory(config: SpectrumConfig, w: float, expert: Expert) -> Any:
    """A fresh forecaster of ``config`` at blend weight ``w`` over ``expert``'s steps, as generation makes it."""
    def make() -> Any:
        return make_forecaster(config.forecaster, expert.num_steps, config.degree, config.ridge_lambda, w,
                               expert.time_points, config.history)
    return make


def _seeds(expert: Expert, budget: int, config: SpectrumConfig) -> list[list[int]]:
    """The search's seed: the paper's schedule with ``budget`` of the expert's steps, where there is one."""
    paper = paper_schedule(expert.num_steps, budget, config)
    return [paper] if paper else []


def _paper_plan(experts: list[Expert], passes: int, config: SpectrumConfig) -> Plan | None:
    """The paper's schedule on each expert's own steps, at the split of ``passes`` nearest to one in proportion
    to their steps that has one for every expert (holding the steps each must compute); None if none does."""
    for split in proportional_splits(experts, passes):
        schedules = [paper_schedule(e.num_steps, b, config) for e, b in zip(experts, split)]
        found = [s for e, s in zip(experts, schedules) if s is not None and e.forced <= set(s)]
        if len(found) == len(experts):
            return tuple((e.name, tuple(s)) for e, s in zip(experts, found))
    return None


def paper_schedule(num_steps: int, passes: int, config: SpectrumConfig | None = None) -> list[int] | None:
    """The paper's adaptive schedule with exactly ``passes`` steps: ``config``'s own if it has that many, else
    the paper's alpha 0.75 or 3.0 (window 2) if one does, else the smallest alpha on a 0.001 grid that does
    (window 2, then 1); None if none does."""
    config = SpectrumConfig() if config is None else config
    warmup = config.warmup_steps
    tried = [(config.window_size, config.flex_window), (2, 0.75), (2, 3.0)]
    for window, alpha in tried:
        schedule = adaptive_schedule(num_steps, warmup, window, alpha)
        if len(schedule) == passes:
            return schedule
    for window in (2, 1):
        lo, hi = 0, num_steps * 1000
        if len(adaptive_schedule(num_steps, warmup, window, hi / 1000)) > passes:
            continue
        while lo < hi:  # passes never increase as alpha grows
            mid = (lo + hi) // 2
            if len(adaptive_schedule(num_steps, warmup, window, mid / 1000)) <= passes:
                hi = mid
            else:
                lo = mid + 1
        schedule = adaptive_schedule(num_steps, warmup, window, lo / 1000)
        if len(schedule) == passes:
            return schedule
    return None


def output_psnr(output: torch.Tensor, reference: torch.Tensor) -> float:
    """10 log10(range^2 / MSE) of a pipeline's ``output`` against ``reference``: range 1 for images in [0, 1],
    else the reference's max - min (latents). inf for identical outputs. (The bench's ``metrics.psnr`` is the
    image metric: uint8-rounded images in [0, 1], a mean over the batch.)"""
    if output.shape != reference.shape:
        raise ValueError(f"outputs of shape {tuple(output.shape)} and {tuple(reference.shape)} cannot be compared.")
    out, ref = output.double(), reference.double()
    low, high = float(ref.min()), float(ref.max())
    span = 1.0 if 0.0 <= low and high <= 1.0 else max(high - low, 1e-12)
    mse = float((out - ref).pow(2).mean())
    return math.inf if mse == 0 else 10 * math.log10(span**2 / mse)


class _Runner:
    """Runs the pipeline on calibration prompt i with the same noise every time, counts network passes, and shows
    one progress bar over every run."""

    def __init__(self, pipe: Any, num_steps: int, seed: int, call_kwargs: dict[str, Any],
                 prompt_calls: list[dict[str, Any]], progress: bool) -> None:
        self.pipe, self.num_steps, self.seed = pipe, num_steps, seed
        self.call_kwargs, self.prompt_calls = call_kwargs, prompt_calls
        self.kwargs = dict(call_kwargs)
        modular = bool(ModularPipeline) and isinstance(pipe, ModularPipeline)
        if modular:
            self.kwargs.setdefault("output", "latents")
        else:
            self.kwargs.setdefault("output_type", "latent")
        generator = self.kwargs.get("generator")
        generators = generator if isinstance(generator, list) else [generator] if generator is not None else []
        if not all(isinstance(g, torch.Generator) for g in generators):
            raise ValueError("generator must be a torch.Generator or a list of them (or pass seed=).")
        self.generator_states = [g.get_state() for g in generators]
        self.passes = 0
        self.full_passes = 0
        # One bar over every pipeline run: the full runs, then the candidates' runs. How many candidates there are is
        # known after the search (searches that agree share one); until then the total counts the full runs only.
        # The pipeline's own per-run bars are hidden meanwhile (progress_bars_hidden).
        self.bar = tqdm(total=len(prompt_calls), desc="calibrate: full runs", unit=" runs", disable=not progress)

    def run(self, index: int) -> torch.Tensor:
        """The pipeline's output on prompt ``index``; its network passes are counted and the bar advanced."""
        output = self._call(index)
        self._count_passes()
        self.bar.update()
        return output

    def _call(self, index: int) -> torch.Tensor:
        kwargs = {**self.kwargs, **self.prompt_calls[index], "num_inference_steps": self.num_steps}
        given = kwargs["generator"] if self.generator_states else None
        if given is None:
            kwargs["generator"] = torch.Generator().manual_seed(self.seed + index)
        else:
            self._rewind(given)
        try:
            with torch.no_grad():
                return output_tensor(self.pipe(**kwargs))
        finally:  # the user's generator is left as it was given, whether calibrate finishes or not
            if given is not None:
                self._rewind(given)

    def _rewind(self, generator: torch.Generator | list[torch.Generator]) -> None:
        for g, state in zip(generator if isinstance(generator, list) else [generator], self.generator_states):
            g.set_state(state)

    def _count_passes(self) -> None:
        summary = spectrum_summary(self.pipe)
        self.passes += sum(len(b.computed_steps) for b in summary.branches)
        if not self.full_passes:  # the first run is a full one: all its calls are passes
            self.full_passes = sum(len(b.computed_steps) + len(b.forecast_steps) for b in summary.branches)


def output_tensor(result: Any) -> torch.Tensor:
    """The first output of a pipeline call (latents, images or frames) as a float tensor on the CPU."""
    value = result
    if hasattr(value, "to_tuple"):  # diffusers' BaseOutput
        value = value.to_tuple()[0]
    elif isinstance(value, tuple):  # return_dict=False
        value = value[0]
    elif not isinstance(value, (torch.Tensor, np.ndarray, list)) and hasattr(value, "__dict__"):
        # An output object of another kind (Kandinsky 6 returns a namespace of frames): its first output.
        value = next((v for v in vars(value).values() if isinstance(v, (torch.Tensor, np.ndarray, list))), value)
    if isinstance(value, list) and value and hasattr(value[0], "convert"):  # PIL images
        value = np.stack([np.asarray(im.convert("RGB"), dtype=np.float32) / 255 for im in value])
    elif isinstance(value, list) and value and isinstance(value[0], (np.ndarray, torch.Tensor)):
        value = torch.stack([torch.as_tensor(np.asarray(v)) if isinstance(v, np.ndarray) else v for v in value])
    if isinstance(value, np.ndarray):
        value = torch.from_numpy(np.ascontiguousarray(value))
    if not isinstance(value, torch.Tensor):
        raise ValueError(f"calibrate cannot compare the pipeline's output ({type(value).__name__}); pass "
                         "output_type='latent' (or output='latents' for a modular pipeline).")
    return value.detach().float().cpu()


class _Recorder:
    """Keeps each branch's features (a fixed subsample of elements) at every step of the recording runs, per
    denoiser, with the steps each denoiser runs and its sampler's step sizes."""

    def __init__(self, order: list[str], seed: int) -> None:
        self.order = order  # the denoisers' names, in the pipeline's order
        self.seed = seed
        # per denoiser: {(prompt index, branch label): {step: feature}}
        self.features: dict[str, dict[tuple[int, str], dict[int, torch.Tensor]]] = {}
        # per denoiser, from its first recording run: (steps, call steps, step levels, time points)
        self.runs: dict[str, tuple[int, tuple[int, int] | None, list[float] | None, list[float] | None]] = {}
        self.counts: dict[str, set[tuple[int, tuple[int, int] | None]]] = {}
        self._subsets: dict[int, torch.Tensor] = {}

    def keep(self, feature: torch.Tensor) -> torch.Tensor:
        """What is kept of a recorded feature: a fixed random subset of its elements, as float32 on the CPU."""
        flat = feature.detach().reshape(-1)
        subset = self._subset(flat.numel(), flat.device)
        return (flat if subset is None else flat[subset]).float().cpu()

    def add(self, index: int, recorded: Recording) -> None:
        """What prompt ``index``'s full run recorded (``recording`` with ``keep``)."""
        for run in recorded.runs:
            denoiser, generation = run.denoiser, run.generation
            assert generation is not None and generation.num_steps is not None  # a recorded run was placed
            by_branch = self.features.setdefault(denoiser, {})
            for branch, by_step in run.features.items():
                by_branch.setdefault((index, branch), {}).update(by_step)
            if denoiser not in self.runs:
                self.runs[denoiser] = (generation.num_steps, call_range(generation), step_levels(generation),
                                       generation.time_points)
            self.counts.setdefault(denoiser, set()).add((generation.num_steps, call_range(generation)))

    def _subset(self, numel: int, device: torch.device) -> torch.Tensor | None:
        if numel <= MAX_RECORDED_ELEMENTS:
            return None
        if numel not in self._subsets:
            generator = torch.Generator().manual_seed(self.seed)
            self._subsets[numel] = torch.randperm(numel, generator=generator)[:MAX_RECORDED_ELEMENTS].sort().values
        return self._subsets[numel].to(device)

    def experts(self) -> list[Expert]:
        """One ``Expert`` per denoiser that ran, in the pipeline's order."""
        if not self.features:
            raise ValueError("the calibration runs recorded no feature: does the pipeline call its denoiser?")
        experts = []
        for name in (n for n in self.order if n in self.features):
            if len(self.counts[name]) > 1:
                raise ValueError(f"{name} ran different steps on different calibration prompts "
                                 f"({sorted(self.counts[name], key=str)}): calibrate plans one schedule per denoiser, "
                                 "for the steps it runs; give every prompt the same call arguments that set them.")
            num_steps, call_steps, levels, time_points = self.runs[name]
            sizes = ([abs(a - b) for a, b in zip(levels, levels[1:])]
                     if levels is not None and len(levels) == num_steps + 1 else None)
            features = {f"{index}/{branch}": by_step
                        for (index, branch), by_step in sorted(self.features[name].items())}
            experts.append(make_expert(name, num_steps, call_steps, features, sizes, time_points))
        return experts


def call_range(generation: Generation) -> tuple[int, int] | None:
    """The first and last step of the pipeline call that ``generation``'s denoiser runs (None where the loop
    does not say which steps of a call they are)."""
    return generation.clock.call_range()


def step_levels(generation: Generation) -> list[float] | None:
    """Each step's noise level and the one after the last step (N + 1 values): the sampler's sigmas where
    it has them, else its timesteps; None for a loop without a scheduler."""
    return generation.clock.step_levels()


def _prompt_calls(prompts: Any) -> list[dict[str, Any]]:
    if isinstance(prompts, (str, Mapping)) or not isinstance(prompts, Sequence) or not prompts:
        raise ValueError("prompts must be a non-empty list of prompts (strings) or of call-argument mappings, "
                         f"got {type(prompts).__name__}.")
    calls = []
    for prompt in prompts:
        if isinstance(prompt, str):
            calls.append({"prompt": prompt})
        elif isinstance(prompt, Mapping):
            calls.append(dict(prompt))
        else:
            raise ValueError(f"each prompt must be a string or a mapping of call arguments, got {type(prompt).__name__}.")
    return calls


def _checked_weights(weights: Sequence[float]) -> tuple[float, ...]:
    if isinstance(weights, (str, bytes)) or not isinstance(weights, Sequence) or not weights:
        raise ValueError(f"blend_weights must be a non-empty list of numbers in [0, 1], got {weights!r}.")
    return tuple(dict.fromkeys(SpectrumConfig(blend_weight=w).blend_weight for w in weights))


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _mean(values: Sequence[float]) -> float:
    return float(np.mean(values)) if values else math.nan
