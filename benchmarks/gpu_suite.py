"""Every GPU figure in one command: FLUX.1-dev-sized speed and memory per method, then Wan2.1-14B-sized r and memory.

    python benchmarks/gpu_suite.py                   # one GPU (H100 80 GB): stops starting methods at --budget-s 540
    python benchmarks/gpu_suite.py --smoke           # the same code at tiny sizes on CPU, float32, seconds

Part 1, FLUX: FluxTransformer2DModel with FLUX.1-dev's config (flux_transformer_speed.FLUX_DEV: 19 dual- and
38 single-stream blocks, 24 heads x 128), random bfloat16 weights created on the GPU, 4096 image + 512 text
tokens (1024x1024), 50 Euler steps driven as flux_transformer_speed drives them. Methods, in this order: the
full sampler; Spectrum at alpha 0.75 and 3.0, each with the full fit (the default, the paper's) and
``history=5`` (a local fit), and alpha 0.75 with the full fit's state in host memory (``state_device="cpu"``); diffusers' TaylorSeer (N=4 and 6, order 1); cache-dit's DBCache on Spectrum's two schedules (left out, with a note, when
cache-dit is not installed); then regional compile (``compile_repeated_blocks``, inductor) of the full
sampler and of Spectrum (the default) at both alphas. Each method gets one untimed run, then ``--repeats`` timed runs.

Part 2, Wan: after FLUX is freed, WanTransformer3DModel with Wan2.1-14B's config (40 layers, 40 heads x 128,
ffn 13824) at 480p (832x480, 81 frames: latent 21x60x104, 32,760 tokens), one branch (no CFG): a few full
calls, then two short Spectrum runs (8 steps, warm-up 2, alpha 3.0, the default full fit: 3 passes, 5 forecasts),
the second with ``state_device="cpu"``: r and memory.

Figures per method: passes, median compute-call and forecast-call ms, r = forecast call / the full sampler's
median call, the per-call speedup N / (P + (N - P) r) and its share of the ideal N / P, the whole-run speedup
against the full (eager) sampler, peak GPU memory of the timed runs (max_memory_allocated, reset per method;
none on a CPU) and the forecaster's peak bytes (spectrum_summary). Calls are timed with CUDA events on a GPU.

The time budget: a method starts only if its estimate (its planned passes at the full sampler's pass time,
its other calls at a bound on their cost, plus ``--compile-allowance-s`` for the first compiled method) fits in
what is left of ``--budget-s`` less ``--wan-reserve-s``; the Wan part starts only if ``--wan-reserve-s`` is
left. Whatever does not start is recorded as skipped with the reason; a method that raises is recorded as
failed with its error and the suite goes on. The JSON record and the markdown table are rewritten after every
method, in ``--out`` (default $OUT when set, else benchmarks/gpu-results/), so a killed run keeps what it
measured; progress lines carry the elapsed time.
"""

from __future__ import annotations

import time

_STARTED = time.perf_counter()  # the budget counts from here: imports of torch and diffusers take seconds

import argparse  # noqa: E402
import contextlib
import datetime
import gc
import importlib.metadata
import importlib.util
import json
import math
import os
import platform
import subprocess
import sys
import traceback
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

# This checkout's sources before any installed copy, and the speed script beside this one.
sys.path[:0] = [os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src"),
                os.path.dirname(os.path.abspath(__file__))]
from flux_transformer_speed import (  # noqa: E402
    DEFAULT_CACHEDIT, FULL_SIZE, SMOKE_SIZE, CallTimer, Setting, build_transformer, cachedit_through, derive,
    feature_size, forecast_floor, make_inputs, measure_method, median, spectrum_figures, taylorseer_enabled,
)

from spectrum_cache import SpectrumConfig, SpectrumWarning, compute_steps  # noqa: E402
from spectrum_cache.integrations import disable_spectrum, enable_spectrum, spectrum_summary  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RECORD, TABLE = "gpu_suite.json", "gpu_suite.md"

# Wan2.1-T2V-14B's transformer/config.json (diffusers' defaults for the class are the same).
WAN_14B = dict(
    patch_size=(1, 2, 2), num_attention_heads=40, attention_head_dim=128, in_channels=16, out_channels=16,
    text_dim=4096, freq_dim=256, ffn_dim=13824, num_layers=40, cross_attn_norm=True,
    qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=1024,
)
# The same architecture, every width different, latent frames/rows/columns all different.
WAN_SMOKE = dict(
    patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=16, in_channels=16, out_channels=16,
    text_dim=24, freq_dim=8, ffn_dim=40, num_layers=2, cross_attn_norm=True,
    qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=32,
)


@dataclass(frozen=True)
class WanSetting:
    name: str
    config: dict[str, Any]
    latent: tuple[int, int, int]  # frames, rows, columns after the VAE (4x in time, 8x in space)
    text_tokens: int

    @property
    def tokens(self) -> int:
        pt, ph, pw = self.config["patch_size"]
        frames, rows, columns = self.latent
        return (frames // pt) * (rows // ph) * (columns // pw)


WAN_480P = WanSetting("Wan2.1-14B, 832x480, 81 frames", WAN_14B, latent=(21, 60, 104), text_tokens=512)
WAN_TINY = WanSetting("smoke (scaled-down Wan2.1)", WAN_SMOKE, latent=(3, 6, 10), text_tokens=8)
# The short Spectrum run on Wan: 3 passes (steps 0, 1, 3) and 5 forecasts of 8 steps.
WAN_SPECTRUM = dict(num_inference_steps=8, warmup_steps=2, window_size=2, flex_window=3.0)
WAN_FULL_CALLS = 3
# Upper bounds on a cheap call's cost against a pass, for the time estimates only: Spectrum's forecast calls
# are about 1% of a pass, cache-dit runs 1 of the blocks on its cached steps, diffusers' TaylorSeer every
# block's norms and feed-forward (60-70% of a pass on CPU).
CHEAP_BOUND = {"full": 1.0, "spectrum": 0.1, "taylorseer": 0.8, "cachedit": 0.3}


@dataclass
class Suite:
    """What the run knows so far, and the record it rewrites after every method."""

    args: argparse.Namespace
    device: torch.device
    dtype: torch.dtype
    out: Path
    start: float = _STARTED
    record: dict[str, Any] = field(default_factory=dict)
    outputs: dict[str, torch.Tensor] = field(default_factory=dict)  # final latents by method, on the host

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def log(self, message: str) -> None:
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%H:%M:%S")
        print(f"[{stamp} +{self.elapsed():6.1f} s] {message}", flush=True)

    def save(self) -> None:
        self.record["elapsed_s"] = round(self.elapsed(), 2)
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / RECORD).write_text(json.dumps(self.record, indent=1, default=str) + "\n")
        (self.out / TABLE).write_text(markdown(self.record))

    def fits(self, estimate_s: float, reserve_s: float) -> str | None:
        """None if a part estimated at ``estimate_s`` fits the budget, else why not."""
        left = self.args.budget_s - reserve_s - self.elapsed()
        if estimate_s > left:
            return (f"budget: estimated {estimate_s:.0f} s, {max(left, 0):.0f} s left of --budget-s "
                    f"{self.args.budget_s:.0f} at {self.elapsed():.0f} s" + (f" less {reserve_s:.0f} s kept for Wan" if reserve_s else ""))
        return None

    def attempt(self, rows: list[dict[str, Any]], label: str, estimate_s: float, reserve_s: float,
                measure: Callable[[], dict[str, Any]]) -> dict[str, Any] | None:
        """Runs ``measure`` unless the budget says no; records it as ok, skipped or failed, then saves."""
        reason = self.fits(estimate_s, reserve_s)
        if reason is not None:
            self.log(f"skip {label}: {reason}")
            rows.append({"method": label, "status": "skipped", "reason": reason})
            self.save()
            return None
        self.log(f"start {label} (estimated {estimate_s:.0f} s)")
        started = time.perf_counter()
        try:
            row = measure()
        except Exception as error:  # one method's failure must not lose the others' figures
            traceback.print_exc()
            row = {"method": label, "status": "failed", "error": f"{type(error).__name__}: {error}"[:2000]}
        if row.get("status") == "failed":
            # Out here, not in the except block: the traceback's frames hold the method's tensors until it ends.
            rows.append(row)
            self.log(f"FAILED {label}: {row['error'].splitlines()[0][:300]}")
            release(self.device)
            self.save()
            return None
        output = row.pop("_output", None)
        if isinstance(output, torch.Tensor):
            row["output_finite"] = bool(torch.isfinite(output).all())
            row["output_rms"] = float(output.float().pow(2).mean().sqrt())
            self.outputs[label] = output.float().cpu()
        row.update(method=label, status="ok", seconds=round(time.perf_counter() - started, 2))
        rows.append(row)
        self.log(f"done {label} in {row['seconds']:.1f} s: {brief(row)}")
        self.save()
        return row


def brief(row: dict[str, Any]) -> str:
    parts = [f"{k} {row[k]:.4g}" for k in ("passes", "pass_ms", "forecast_ms", "r", "total_speedup", "peak_gib")
             if isinstance(row.get(k), (int, float))]
    return ", ".join(parts) or "measured"


def release(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


@contextlib.contextmanager
def spectrum_enabled(transformer: torch.nn.Module, config: SpectrumConfig) -> Iterator[None]:
    enable_spectrum(transformer, config)
    try:
        yield
    finally:
        disable_spectrum(transformer)


def regional_compile(transformer: torch.nn.Module, backend: str) -> None:
    """torch.compile of each repeated block (diffusers' compile_repeated_blocks where the class has it)."""
    if hasattr(transformer, "compile_repeated_blocks") and getattr(transformer, "_repeated_blocks", None):
        transformer.compile_repeated_blocks(fullgraph=True, backend=backend)
        return
    raise RuntimeError(f"{type(transformer).__name__} has no compile_repeated_blocks in diffusers "
                       f"{importlib.metadata.version('diffusers')}")


ALPHAS, HISTORIES, TAYLORSEER_INTERVALS = (0.75, 3.0), (None, 5), (4, 6)


# The default fit with its state in host memory (the forecaster's on-GPU bytes drop; what the copies cost).
OFFLOAD_LABEL = "spectrum alpha=0.75 state_device=cpu"
# Compiled with Spectrum's default fit (every recorded step), the one users get.
COMPILED_HISTORY = None


def spectrum_label(alpha: float, history: int | None = None, compiled: bool = False) -> str:
    return f"spectrum alpha={alpha}" + (f" history={history}" if history else "") + (", regional compile" if compiled else "")


def flux_labels() -> list[str]:
    """Every FLUX method in the order run, so that what never started is still listed."""
    return ["full", *(spectrum_label(a, h) for a in ALPHAS for h in HISTORIES), OFFLOAD_LABEL,
            *(f"diffusers TaylorSeer N={i} O=1" for i in TAYLORSEER_INTERVALS),
            *(f"cache-dit {name.removeprefix('cachedit-')}" for name in DEFAULT_CACHEDIT),
            "full, regional compile", *(spectrum_label(a, COMPILED_HISTORY, compiled=True) for a in ALPHAS)]


def flux_part(suite: Suite, setting: Setting) -> None:
    args, device, dtype = suite.args, suite.device, suite.dtype
    steps, runs = args.steps, 1 + args.repeats
    part = suite.record["flux"] = {"setting": setting.name, "config": setting.config, "image_tokens": setting.image_side**2,
                                   "text_tokens": setting.text_tokens, "steps": steps, "rows": []}
    rows = part["rows"]
    reserve = args.wan_reserve_s
    suite.log(f"building {setting.name} ({dtype}, {device})")
    transformer = build_transformer(setting.config, device, dtype)
    inputs = make_inputs(setting, device, dtype)
    part["parameters"] = sum(p.numel() for p in transformer.parameters())
    part["build_s"] = round(suite.elapsed(), 2)
    suite.log(f"built: {part['parameters'] / 1e9:.2f} B parameters")
    probe = transformer.single_transformer_blocks[-1].attn.to_q
    elements = feature_size(setting)
    part["feature_elements"] = elements

    def measure(label: str, through: Callable[..., Any] | None = None,
                ran: Callable[[], list[bool]] | None = None) -> dict[str, Any]:
        return measure_method(transformer, inputs, steps, device, probe, args.repeats, label, through, ran)

    # Under regional compile the probe, a hook inside a compiled block, does not fire: which calls ran the
    # network is then every call (the full sampler) or the steps Spectrum's summary says it computed (the
    # eager rows check that summary against the probe).
    def spectrum_ran() -> list[bool]:
        (branch,) = spectrum_summary(transformer).branches
        return [step in branch.computed_steps for step in range(steps)]

    def every_call_ran() -> list[bool]:
        return [True] * steps

    def full_method() -> dict[str, Any]:
        row = measure("full")
        return derive(row, steps, median([t for run_calls in row["calls"] for t, _ in run_calls]), row["total"])

    full = suite.attempt(rows, "full", 0.0, reserve, full_method)
    if full is None:
        rows += [{"method": label, "status": "skipped", "reason": "the full sampler was not measured"}
                 for label in flux_labels()[1:]]
        suite.save()
        return
    full_call = full["pass_ms"] / 1000
    part["full_call_ms"] = full["pass_ms"]

    def estimate(kind: str, passes: int | None) -> float:
        passes = steps if passes is None else passes
        return runs * full_call * (passes + (steps - passes) * CHEAP_BOUND[kind])

    def finish(row: dict[str, Any]) -> dict[str, Any]:
        return derive(row, steps, full_call, full["total"])

    def spectrum_method(config: SpectrumConfig, label: str,
                        ran: Callable[[], list[bool]] | None = None) -> Callable[[], dict[str, Any]]:
        def go() -> dict[str, Any]:
            with spectrum_enabled(transformer, config):
                row = measure(label, ran=ran)
                row.update(spectrum_figures(transformer, config, elements))
            return finish(row)
        return go

    spectrum_configs = [(spectrum_label(alpha, history), SpectrumConfig(num_inference_steps=steps, flex_window=alpha, history=history))
                        for alpha in ALPHAS for history in HISTORIES]
    spectrum_configs.append((OFFLOAD_LABEL, SpectrumConfig(num_inference_steps=steps, flex_window=0.75, state_device="cpu")))
    for label, config in spectrum_configs:
        suite.attempt(rows, label, estimate("spectrum", len(compute_steps(config))), reserve, spectrum_method(config, label))

    for interval in TAYLORSEER_INTERVALS:
        def taylorseer(interval: int = interval) -> dict[str, Any]:
            with taylorseer_enabled(transformer, interval, dtype):
                return finish(measure(f"diffusers TaylorSeer N={interval} O=1"))
        suite.attempt(rows, f"diffusers TaylorSeer N={interval} O=1", estimate("taylorseer", None), reserve, taylorseer)

    if importlib.util.find_spec("cache_dit") is None:
        part["notes"] = part.get("notes", []) + ["cache-dit is not installed (pip install -e '.[peers]'): no DBCache rows"]
        for name in DEFAULT_CACHEDIT:
            rows.append({"method": f"cache-dit {name.removeprefix('cachedit-')}", "status": "skipped",
                         "reason": "cache-dit is not installed"})
        suite.log("cache-dit is not installed: DBCache rows skipped")
    else:
        for name in DEFAULT_CACHEDIT:
            def cachedit(name: str = name) -> dict[str, Any]:
                through, expected = cachedit_through(transformer, name, steps)
                row = measure(name, through)
                row["expected_passes"] = expected
                return finish(row)
            label = f"cache-dit {name.removeprefix('cachedit-')}"
            suite.attempt(rows, label, estimate("cachedit", None), reserve, cachedit)

    def floor_method() -> dict[str, Any]:
        seconds = forecast_floor(transformer, inputs, steps, device)
        return {"ms": 1000 * seconds, "r": seconds / full_call}

    floor = suite.attempt(part.setdefault("floor_rows", []), "forecast-step floor", 1.0, reserve, floor_method)
    if floor is not None:
        part["floor"] = {"ms": floor["ms"], "r": floor["r"]}

    # Compiled last: compile_repeated_blocks changes the blocks in place, for the rest of the model's life.
    compiled = {"ok": None}

    def compile_once() -> None:
        if compiled["ok"] is None:
            compiled["ok"] = False
            regional_compile(transformer, args.compile_backend)
            compiled["ok"] = True
        elif not compiled["ok"]:
            raise RuntimeError("regional compile failed on an earlier method")

    def allowance() -> float:
        return 0.0 if compiled["ok"] else args.compile_allowance_s

    def compiled_full() -> dict[str, Any]:
        compile_once()
        return finish(measure("full, regional compile", ran=every_call_ran))

    def against_eager(row: dict[str, Any] | None, eager: str) -> None:
        """What compiling changed: the final latent against the eager run's, and dynamo's graph counts."""
        if row is None:
            return
        from torch._dynamo.utils import counters

        row["dynamo_graphs"] = counters["stats"]["unique_graphs"]
        row["graph_breaks"] = sum(counters["graph_break"].values())
        if eager in suite.outputs and row["method"] in suite.outputs:
            a, b = suite.outputs[row["method"]], suite.outputs[eager]
            row["max_abs_diff_vs_eager"] = float((a - b).abs().max())
            row["rel_diff_vs_eager"] = float((a - b).norm() / b.norm().clamp_min(1e-30))
        suite.save()

    compiled_rows: list[dict[str, Any]] = []
    row = suite.attempt(rows, "full, regional compile", estimate("full", None) + allowance(), reserve, compiled_full)
    against_eager(row, "full")
    if row is not None:
        compiled_rows.append(row)
    for alpha in ALPHAS:
        config = SpectrumConfig(num_inference_steps=steps, flex_window=alpha, history=COMPILED_HISTORY)
        label = spectrum_label(alpha, COMPILED_HISTORY, compiled=True)

        def compiled_spectrum(config: SpectrumConfig = config, label: str = label) -> dict[str, Any]:
            compile_once()
            return spectrum_method(config, label, spectrum_ran)()

        row = suite.attempt(rows, label, estimate("spectrum", len(compute_steps(config))) + allowance(), reserve,
                            compiled_spectrum)
        against_eager(row, spectrum_label(alpha, COMPILED_HISTORY))
        if row is not None and compiled_rows:
            row["speedup_vs_compiled_full"] = compiled_rows[0]["total"] / row["total"]
    suite.save()

    del transformer, inputs, probe
    torch._dynamo.reset()  # compiled code holds the blocks
    release(device)


def wan_inputs(setting: WanSetting, device: torch.device, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    generator = torch.Generator("cpu").manual_seed(0)
    frames, rows, columns = setting.latent
    return {
        "hidden_states": torch.randn(1, setting.config["in_channels"], frames, rows, columns, generator=generator).to(device, dtype),
        "encoder_hidden_states": torch.randn(1, setting.text_tokens, setting.config["text_dim"], generator=generator).to(device, dtype),
    }


@torch.no_grad()
def wan_sample(transformer: torch.nn.Module, inputs: dict[str, torch.Tensor], steps: int,
               timer: CallTimer | None = None) -> torch.Tensor:
    """Euler steps sigma 1 -> 0 as WanPipeline calls its transformer (one branch: timestep = 1000 sigma)."""
    sigmas = torch.linspace(1.0, 0.0, steps + 1).tolist()
    x = inputs["hidden_states"]
    for i in range(steps):
        timestep = torch.full((1,), 1000 * sigmas[i], device=x.device, dtype=x.dtype)

        def call() -> torch.Tensor:
            with transformer.cache_context("cond"):
                return transformer(hidden_states=x, timestep=timestep, encoder_hidden_states=inputs["encoder_hidden_states"],
                                   return_dict=False)[0]

        velocity = timer(call) if timer is not None else call()
        x = x + (sigmas[i + 1] - sigmas[i]) * velocity
    return x


def build_wan(config: dict[str, Any], device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    """Random weights created on ``device`` in ``dtype`` (14 B parameters: no float32 copy on the host)."""
    from diffusers import WanTransformer3DModel

    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = WanTransformer3DModel(**config)
    finally:
        torch.set_default_dtype(previous)
    return model.eval().requires_grad_(False)


def wan_methods() -> list[tuple[str, SpectrumConfig]]:
    """The short Spectrum runs on Wan: the default fit on the device, then its window in host memory."""
    return [("spectrum alpha=3.0, 8 steps", SpectrumConfig(**WAN_SPECTRUM)),
            ("spectrum alpha=3.0 state_device=cpu, 8 steps", SpectrumConfig(**WAN_SPECTRUM, state_device="cpu"))]


def wan_part(suite: Suite, setting: WanSetting) -> None:
    device, dtype = suite.device, suite.dtype
    part = suite.record["wan"] = {"setting": setting.name, "config": setting.config, "latent": setting.latent,
                                  "tokens": setting.tokens, "text_tokens": setting.text_tokens,
                                  "spectrum": WAN_SPECTRUM, "full_calls": WAN_FULL_CALLS, "rows": []}
    rows = part["rows"]
    reason = suite.fits(suite.args.wan_reserve_s, 0.0)
    if reason is not None:
        suite.log(f"skip Wan: {reason}")
        for label in ("full", *(label for label, _ in wan_methods())):
            rows.append({"method": label, "status": "skipped", "reason": reason})
        suite.save()
        return
    suite.log(f"building {setting.name} ({setting.tokens} tokens)")
    transformer = build_wan(setting.config, device, dtype)
    inputs = wan_inputs(setting, device, dtype)
    part["parameters"] = sum(p.numel() for p in transformer.parameters())
    suite.log(f"built: {part['parameters'] / 1e9:.2f} B parameters")
    probe = transformer.blocks[-1].attn1.to_q
    elements = setting.tokens * setting.config["num_attention_heads"] * setting.config["attention_head_dim"]
    part["feature_elements"] = elements

    def full() -> dict[str, Any]:
        row = measure_method(transformer, inputs, WAN_FULL_CALLS, device, probe, 1, "full", wan_sample)
        return derive(row, WAN_FULL_CALLS, median([t for t, _ in row["calls"][0]]), row["total"])

    full_row = suite.attempt(rows, "full", 0.0, 0.0, full)
    for label, config in wan_methods():
        if full_row is None:
            rows.append({"method": label, "status": "skipped", "reason": "the full sampler was not measured"})
            continue
        full_call = full_row["pass_ms"] / 1000

        def spectrum(label: str = label, config: SpectrumConfig = config) -> dict[str, Any]:
            with spectrum_enabled(transformer, config):
                row = measure_method(transformer, inputs, config.num_inference_steps, device, probe, 1, label, wan_sample)
                row.update(spectrum_figures(transformer, config, elements))
            # Whole-run speedup: against the full sampler's median call times the same number of steps.
            return derive(row, config.num_inference_steps, full_call, full_call * config.num_inference_steps)

        passes = len(compute_steps(config))
        estimate = 2 * full_call * (passes + (config.num_inference_steps - passes) * CHEAP_BOUND["spectrum"])
        suite.attempt(rows, label, estimate, 0.0, spectrum)
    del transformer, inputs, probe
    release(device)


def versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {"python": platform.python_version()}
    for name in ("torch", "diffusers", "cache-dit", "spectrum-cache", "triton"):
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    try:
        found["git_commit"] = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True,
                                             text=True, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        found["git_commit"] = None
    return found


def _cell(value: Any, fmt: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return format(value, fmt)


def markdown(record: dict[str, Any]) -> str:
    """The record as markdown: a header naming the device, one table per model."""
    lines = [f"# GPU suite{' (smoke: tiny sizes, not a measurement)' if record.get('smoke') else ''}", "",
             f"- device: {record.get('device')}; dtype {record.get('dtype')}; {record.get('date')}",
             f"- versions: " + ", ".join(f"{k} {v}" for k, v in record.get("versions", {}).items()),
             f"- command: `{record.get('command')}`; elapsed {record.get('elapsed_s')} s of --budget-s {record.get('budget_s')}", ""]
    flux = record.get("flux")
    if flux:
        lines += [f"## {flux['setting']}: {flux['image_tokens']} image + {flux['text_tokens']} text tokens, "
                  f"{flux['steps']} steps", ""]
        lines += ["| method | status | passes | ideal | compute call ms | forecast call ms | r | per-call speedup | "
                  "of ideal | whole-run speedup | peak GiB | forecaster MiB (B/element) | warm-up s |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        lines += [_row(row) for row in flux["rows"]]
        if flux.get("floor"):
            lines += ["", f"Forecast-step floor (time embedding + forecast + head, no hooks): {flux['floor']['ms']:.2f} ms, "
                          f"r {flux['floor']['r']:.2%}."]
        for row in flux["rows"]:
            if "speedup_vs_compiled_full" in row:
                lines.append(f"{row['method']}: {row['speedup_vs_compiled_full']:.2f}x the compiled full sampler's whole run.")
            if "rel_diff_vs_eager" in row:
                lines.append(f"{row['method']}: final latent {row['rel_diff_vs_eager']:.1e} (relative L2) from the eager run's; "
                             f"dynamo graphs so far {row['dynamo_graphs']}, graph breaks {row['graph_breaks']}.")
            if row.get("output_finite") is False:
                lines.append(f"{row['method']}: its final latent is NOT finite (random weights overflowed?).")
        lines += [f"Note: {note}" for note in flux.get("notes", [])]
        lines.append("")
    wan = record.get("wan")
    if wan:
        lines += [f"## {wan['setting']}: {wan['tokens']} tokens, one branch, a few calls", "",
                  "| method | status | passes | compute call ms | forecast call ms | r | peak GiB | forecaster MiB (B/element) |",
                  "|---|---|---|---|---|---|---|---|"]
        for row in wan["rows"]:
            if row["status"] != "ok":
                lines.append(f"| {row['method']} | {_status(row)} | | | | | | |")
                continue
            lines.append(f"| {row['method']} | ok | {row['passes']} of {len(row['calls'][0])} | {_cell(row['pass_ms'], '.1f')} | "
                         f"{_cell(row['forecast_ms'], '.2f')} | {row['r']:.2%} | {_cell(row['peak_gib'], '.2f')} | {_held(row)} |")
        lines.append("")
    return "\n".join(lines)


def _status(row: dict[str, Any]) -> str:
    detail = (row.get("reason") or row.get("error") or "").splitlines()
    return f"{row['status']}: {detail[0] if detail else ''}".replace("|", "/")[:200]


def _held(row: dict[str, Any]) -> str:
    if "held_bytes" not in row:
        return "-"
    return f"{row['held_bytes'] / 2**20:.1f} ({row['bytes_per_element']:.1f} B)"


def _row(row: dict[str, Any]) -> str:
    if row["status"] != "ok":
        return f"| {row['method']} | {_status(row)} |" + " |" * 11
    return (f"| {row['method']} | ok | {row['passes']} | {row['ideal']:.2f}x | {_cell(row['pass_ms'], '.1f')} | "
            f"{_cell(row['forecast_ms'], '.2f')} | {row['r']:.2%} | {row['per_call_speedup']:.2f}x | {row['of_ideal']:.1%} | "
            f"{row['total_speedup']:.2f}x | {_cell(row['peak_gib'], '.2f')} | {_held(row)} | {row['warmup_s']:.1f} |")


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny FLUX and Wan configs on CPU, float32, eager-backend compile")
    parser.add_argument("--out", type=Path, default=None, help="folder for gpu_suite.json and gpu_suite.md "
                        "(default $OUT when set, else benchmarks/gpu-results/; a smoke subfolder of either with --smoke)")
    parser.add_argument("--budget-s", type=float, default=540.0, help="seconds after which no method starts (default 540)")
    parser.add_argument("--wan-reserve-s", type=float, default=None,
                        help="seconds of the budget kept for the Wan part (default 120 on a GPU, 0 with --smoke)")
    parser.add_argument("--compile-allowance-s", type=float, default=None,
                        help="compile time assumed for the first compiled method (default 150 on a GPU, 20 with --smoke)")
    parser.add_argument("--compile-backend", default=None, help="torch.compile backend (default inductor; eager with --smoke)")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default=None,
                        help="default bfloat16 on the GPU (as FLUX and Wan ship), float32 with --smoke")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=1, help="timed runs per FLUX method after its untimed one")
    parser.add_argument("--no-wan", action="store_true", help="leave out the Wan part (recorded as skipped)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default torch's; 1 with --smoke)")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.repeats < 1 or args.budget_s <= 0:
        parser.error("--steps and --repeats must be >= 1 and --budget-s > 0")
    gpu = not args.smoke
    args.wan_reserve_s = (120.0 if gpu else 0.0) if args.wan_reserve_s is None else args.wan_reserve_s
    args.compile_allowance_s = (150.0 if gpu else 20.0) if args.compile_allowance_s is None else args.compile_allowance_s
    args.compile_backend = args.compile_backend or ("inductor" if gpu else "eager")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.smoke:
        device, dtype = torch.device("cpu"), getattr(torch, args.dtype or "float32")
        torch.set_num_threads(args.threads or 1)
    else:
        if not torch.cuda.is_available():
            print("gpu_suite: no CUDA device; run with --smoke for the CPU check of the same code", file=sys.stderr)
            return 2
        device, dtype = torch.device("cuda"), getattr(torch, args.dtype or "bfloat16")
        if args.threads:
            torch.set_num_threads(args.threads)
    # The call timer's probe is a hook on a block's query projection: Spectrum rightly says it runs only on
    # compute steps, which is what the probe counts.
    warnings.filterwarnings("ignore", message=".*has hooks of its own", category=SpectrumWarning)
    out = args.out or Path(os.environ.get("OUT") or ROOT / "benchmarks" / "gpu-results")
    if args.smoke and args.out is None:
        out = out / "smoke"  # never mistaken for, or written over, a GPU record
    suite = Suite(args, device, dtype, out)
    suite.record.update(
        suite="spectrum-cache benchmarks/gpu_suite.py", smoke=args.smoke,
        date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        device=torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)",
        dtype=str(dtype).removeprefix("torch."), versions=versions(), command=" ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
        budget_s=args.budget_s, wan_reserve_s=args.wan_reserve_s, compile_backend=args.compile_backend,
        repeats=args.repeats, timing="CUDA events per call" if device.type == "cuda" else "perf_counter per call",
    )
    suite.log(f"{suite.record['device']}, {suite.record['dtype']}; writing {out / RECORD} and {out / TABLE}")
    suite.save()
    flux_part(suite, SMOKE_SIZE if args.smoke else FULL_SIZE)
    if args.no_wan:
        suite.record["wan"] = {"setting": "left out (--no-wan)", "tokens": 0, "text_tokens": 0, "rows": [
            {"method": "wan", "status": "skipped", "reason": "--no-wan"}]}
    else:
        wan_part(suite, WAN_TINY if args.smoke else WAN_480P)
    suite.save()
    suite.log(f"finished; {out / TABLE}")
    print(markdown(suite.record), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
