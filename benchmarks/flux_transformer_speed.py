"""Measured speedup of Spectrum on a FLUX-architecture transformer, against the ideal N / passes.

    python benchmarks/flux_transformer_speed.py                 # GPU: FLUX.1-dev config, bf16, 1024x1024
    python benchmarks/flux_transformer_speed.py --config mid    # the CPU measurement (fp32, 2 threads)
    python benchmarks/flux_transformer_speed.py --config smoke  # a tiny config that runs in seconds

Every transformer call is timed on its own, and counts as a network pass when the last block's
attention ran (its query projection was called): Spectrum and cache-dit skip whole blocks on the
other calls, diffusers' TaylorSeer its attention modules (the rest of each block still runs, so its
cheap calls cost more). From the medians, r = cheap call / network pass, and the speedup the per-call costs give is
N / (P + (N - P) r) for P passes, which is P / (P + (N - P) r) of the ideal N / P. Whole-run totals are
printed too, but on a shared machine they are noisy (about 5% from run to run); the medians are not.

Builds FluxTransformer2DModel with FLUX.1-dev's published config (19 dual-stream blocks, 38 single-stream
blocks, 24 heads x 128, joint_attention_dim 4096, pooled 768, in_channels 64, guidance embedding, rope
axes (16, 56, 56)) and random weights (no download: speed does not depend on the values), then times a
50-step Euler loop over 4096 image tokens (1024x1024 after the VAE and 2x2 packing) and 512 text tokens:
first the plain loop, then with Spectrum (``enable_spectrum`` on the bare transformer) at alpha 0.75 and
3.0. Times are CUDA events on a GPU and perf_counter on a CPU; one untimed run of each comes first.
"""

from __future__ import annotations

import argparse
import contextlib
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from diffusers import DiffusionPipeline, FluxTransformer2DModel

from spectrum_cache import SpectrumConfig, SpectrumWarning, compute_steps
from spectrum_cache.bench.methods import parse_method
from spectrum_cache.integrations import disable_spectrum, enable_spectrum, spectrum_summary

# FLUX.1-dev's transformer/config.json.
FLUX_DEV = dict(
    patch_size=1, in_channels=64, out_channels=None, num_layers=19, num_single_layers=38, attention_head_dim=128,
    num_attention_heads=24, joint_attention_dim=4096, pooled_projection_dim=768, guidance_embeds=True,
    axes_dims_rope=(16, 56, 56),
)
# The CPU measurement of issue 11: 4 dual + 8 single blocks, width 512 (8 heads x 64).
MID = dict(
    patch_size=1, in_channels=64, out_channels=None, num_layers=4, num_single_layers=8, attention_head_dim=64,
    num_attention_heads=8, joint_attention_dim=512, pooled_projection_dim=256, guidance_embeds=True,
    axes_dims_rope=(8, 28, 28),
)
# The same architecture scaled down until a CPU runs 50 steps in seconds.
SMOKE = dict(
    patch_size=1, in_channels=16, out_channels=None, num_layers=2, num_single_layers=3, attention_head_dim=32,
    num_attention_heads=2, joint_attention_dim=64, pooled_projection_dim=32, guidance_embeds=True,
    axes_dims_rope=(8, 12, 12),
)


@dataclass(frozen=True)
class Setting:
    """Model config and token counts of one benchmark size."""

    name: str
    config: dict[str, Any]
    image_side: int  # image tokens = side * side (64 for 1024x1024: 1024 / 8 (VAE) / 2 (packing))
    text_tokens: int


FULL_SIZE = Setting("FLUX.1-dev, 1024x1024", FLUX_DEV, image_side=64, text_tokens=512)
MID_SIZE = Setting("mid-size FLUX (4+8 blocks, width 512)", MID, image_side=16, text_tokens=64)
SMOKE_SIZE = Setting("smoke (scaled-down FLUX)", SMOKE, image_side=8, text_tokens=16)
SETTINGS = {"flux-dev": FULL_SIZE, "mid": MID_SIZE, "smoke": SMOKE_SIZE}
# cache-dit's DBCache on Spectrum's two schedules (its first block runs on every step; Fn=1, Bn=0).
DEFAULT_CACHEDIT = ("cachedit-dbcache-a0.75", "cachedit-taylorseer-a3.0")


def build_transformer(config: dict[str, Any], device: torch.device, dtype: torch.dtype) -> FluxTransformer2DModel:
    """Random weights, created directly on ``device`` in ``dtype`` (a float32 copy of FLUX.1-dev would
    need 48 GB before the cast)."""
    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = FluxTransformer2DModel(**config)
    finally:
        torch.set_default_dtype(previous)
    return model.eval().requires_grad_(False)


def make_inputs(setting: Setting, device: torch.device, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """The transformer's inputs except the timestep, as FluxPipeline builds them."""
    config, side = setting.config, setting.image_side
    generator = torch.Generator("cpu").manual_seed(0)
    image_ids = torch.zeros(side, side, 3)
    image_ids[..., 1] = torch.arange(side)[:, None]
    image_ids[..., 2] = torch.arange(side)[None, :]
    return {
        "hidden_states": torch.randn(1, side * side, config["in_channels"], generator=generator).to(device, dtype),
        "encoder_hidden_states": torch.randn(1, setting.text_tokens, config["joint_attention_dim"], generator=generator).to(device, dtype),
        "pooled_projections": torch.randn(1, config["pooled_projection_dim"], generator=generator).to(device, dtype),
        "img_ids": image_ids.reshape(-1, 3).to(device, dtype),
        "txt_ids": torch.zeros(setting.text_tokens, 3, device=device, dtype=dtype),
        "guidance": torch.full((1,), 3.5, device=device, dtype=dtype),
    }


class CallTimer:
    """Seconds of each transformer call: CUDA events on a GPU (device time, read after the loop, so
    timing adds no sync inside it), perf_counter elsewhere; and whether the call ran the network."""

    def __init__(self, device: torch.device, probe: torch.nn.Module | None) -> None:
        self.cuda = device.type == "cuda"
        self.marks: list[Any] = []
        self.ran: list[bool] = []
        self._probe_calls = 0
        self._probe = probe

    def __call__(self, fn: Callable[[], Any]) -> Any:
        if self._probe is None:  # the caller fills ``ran`` after the run
            return self._timed(fn)
        before = self._probe_calls
        handle = self._probe.register_forward_pre_hook(self._count)
        try:
            return self._timed(fn)
        finally:
            handle.remove()
            self.ran.append(self._probe_calls > before)

    def _count(self, module: torch.nn.Module, args: Any) -> None:
        self._probe_calls += 1

    def _timed(self, fn: Callable[[], Any]) -> Any:
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            out = fn()
            end.record()
            self.marks.append((start, end))
            return out
        start_time = time.perf_counter()
        out = fn()
        self.marks.append(time.perf_counter() - start_time)
        return out

    def seconds(self) -> list[float]:
        if self.cuda:
            torch.cuda.synchronize()
            return [start.elapsed_time(end) / 1000 for start, end in self.marks]
        return list(self.marks)


@torch.no_grad()
def sample(transformer: torch.nn.Module, inputs: dict[str, torch.Tensor], steps: int,
           timer: CallTimer | None = None) -> torch.Tensor:
    """A flow-matching Euler loop, sigma 1 -> 0, as FLUX's scheduler runs it (timestep = sigma)."""
    sigmas = torch.linspace(1.0, 0.0, steps + 1).tolist()
    x = inputs["hidden_states"]
    for i in range(steps):
        timestep = torch.full((1,), sigmas[i], device=x.device, dtype=x.dtype)

        def call() -> torch.Tensor:
            # As diffusers' pipelines do: its own caches need a context, Spectrum reads the branch from it.
            with transformer.cache_context("cond"):
                return transformer(**{**inputs, "hidden_states": x}, timestep=timestep, return_dict=False)[0]

        velocity = timer(call) if timer is not None else call()
        x = x + (sigmas[i + 1] - sigmas[i]) * velocity
    return x


class LoopPipeline(DiffusionPipeline):
    """The same loop as a pipeline call: cache-dit resets its cache context per pipeline call, so it is
    measured through one (Spectrum is enabled on the bare transformer and counts steps itself)."""

    def __init__(self, transformer: torch.nn.Module) -> None:
        super().__init__()
        self.register_modules(transformer=transformer)

    def __call__(self, inputs: dict[str, torch.Tensor], steps: int, timer: CallTimer | None = None) -> torch.Tensor:
        return sample(self.transformer, inputs, steps, timer)


@torch.no_grad()
def forecast_floor(transformer: FluxTransformer2DModel, inputs: dict[str, torch.Tensor], steps: int, device: torch.device,
                   calls: int = 60) -> float:
    """Median seconds of the part of a forecast step Spectrum cannot skip, called directly with no hooks:
    the input embedders (patch, text, rotary), the time embedding, the forecast itself (the default fit, from
    seven recorded features) and the output head. Spectrum's own forecast calls cost this plus the integration
    around it."""
    from spectrum_cache.forecast import SpectrumForecaster

    hidden = transformer.norm_out.linear.in_features
    tokens = inputs["hidden_states"].shape[1]
    dtype = inputs["hidden_states"].dtype
    forecaster = SpectrumForecaster(num_inference_steps=steps)
    generator = torch.Generator("cpu").manual_seed(1)
    for step in range(7):
        forecaster.update(step, torch.randn(1, tokens, hidden, generator=generator).to(device, dtype))
    timestep = torch.full((1,), 0.5, device=device, dtype=dtype)
    guidance = inputs.get("guidance") if transformer.config.guidance_embeds else None

    def step() -> torch.Tensor:
        # As FluxTransformer2DModel.forward computes its embeddings, time embedding and head.
        transformer.x_embedder(inputs["hidden_states"])
        t = timestep.to(dtype) * 1000
        if guidance is None:
            temb = transformer.time_text_embed(t, inputs["pooled_projections"])
        else:
            temb = transformer.time_text_embed(t, guidance.to(dtype) * 1000, inputs["pooled_projections"])
        transformer.context_embedder(inputs["encoder_hidden_states"])
        transformer.pos_embed(torch.cat((inputs["txt_ids"], inputs["img_ids"]), dim=0))
        return transformer.proj_out(transformer.norm_out(forecaster.predict(20), temb))

    timer = CallTimer(device, transformer.norm_out)
    for _ in range(5):
        step()
    for _ in range(calls):
        timer(step)
    return median(timer.seconds())


def median(values: list[float]) -> float:
    return float(torch.tensor(values, dtype=torch.float64).median()) if values else float("nan")


def measure_method(transformer: torch.nn.Module, inputs: dict[str, torch.Tensor], steps: int, device: torch.device,
                   probe: torch.nn.Module, repeats: int, label: str,
                   through: Callable[..., Any] | None = None,
                   ran: Callable[[], list[bool]] | None = None) -> dict[str, Any]:
    """One untimed run (first-call costs, a forecaster's first fit, a compile), then ``repeats`` timed
    runs: every call's seconds and whether it ran the network, the median whole-run seconds, and the
    peak GPU memory of the timed runs (None on a CPU). ``ran``, where given, says after each run which
    calls ran the network instead of the probe (a hook inside a compiled block does not fire)."""

    outputs: list[Any] = []

    def fresh_run(timer: CallTimer | None = None) -> None:
        # As a pipeline does after every call (maybe_free_model_hooks): stateful caches start over, so
        # diffusers' TaylorSeer counts its warm-up steps again instead of carrying on from the last run.
        registry = getattr(transformer, "_diffusers_hook", None)
        if registry is not None:
            registry.reset_stateful_hooks()
        outputs[:] = [(through or sample)(transformer, inputs, steps, timer)]

    start = time.perf_counter()
    fresh_run()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    warmup = time.perf_counter() - start
    calls: list[list[tuple[float, bool]]] = []
    totals = []
    for _ in range(repeats):
        timer = CallTimer(device, None if ran else probe)
        start = time.perf_counter()
        fresh_run(timer)
        seconds = timer.seconds()  # synchronises on a GPU, so the total is the whole run's
        totals.append(time.perf_counter() - start)
        if ran is not None:
            timer.ran = ran()
            assert len(timer.ran) == len(seconds), (label, len(timer.ran), len(seconds))
        calls.append(list(zip(seconds, timer.ran)))
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    # "_output": the last run's final latent (None where the sampler returns none), for comparisons.
    return {"method": label, "calls": calls, "total": median(totals), "warmup_s": warmup, "peak_gib": peak,
            "_output": outputs[0]}


def derive(row: dict[str, Any], steps: int, full_call: float, full_total: float) -> dict[str, Any]:
    """Adds to a measured row its passes, per-call medians, r against the full sampler's median call,
    the speedup those medians give and its share of the ideal N / passes, and the whole-run speedup."""
    passes = [t for run_calls in row["calls"] for t, ran in run_calls if ran]
    forecasts = [t for run_calls in row["calls"] for t, ran in run_calls if not ran]
    row["passes"] = sum(ran for _, ran in row["calls"][0])
    if row.get("expected_passes") is not None:
        assert row["passes"] == row["expected_passes"], (
            f"{row['method']}: {row['passes']} network passes counted, {row['expected_passes']} planned")
    row["pass_ms"] = 1000 * median(passes)
    row["forecast_ms"] = 1000 * median(forecasts) if forecasts else None
    row["r"] = median(forecasts) / full_call if forecasts else 0.0
    p = row["passes"]
    row["ideal"] = steps / p
    row["per_call_speedup"] = steps / (p + (steps - p) * row["r"])
    row["of_ideal"] = row["per_call_speedup"] / row["ideal"]
    row["total_speedup"] = full_total / row["total"]
    return row


def spectrum_figures(transformer: torch.nn.Module, config: SpectrumConfig, feature_elements: int) -> dict[str, Any]:
    """The passes Spectrum's schedule plans and the forecaster's peak bytes (also per feature element),
    read from spectrum_summary after a run; asserts the run computed the planned steps."""
    summary = spectrum_summary(transformer)
    expected = len(compute_steps(config))
    held = max(b.peak_bytes for b in summary.branches)
    assert len(summary.branches[0].computed_steps) == expected, summary
    return {"expected_passes": expected, "held_bytes": held, "bytes_per_element": held / feature_elements,
            "stand_in_bytes": max(b.stand_in_bytes for b in summary.branches)}


def full_pass(rows: list[dict[str, Any]]) -> float:
    """The full sampler's median call (ms): the network pass the ratios are taken against."""
    return next(r["pass_ms"] for r in rows if r["method"] == "full")


def run(setting: Setting, steps: int, alphas: list[float], device: torch.device, dtype: torch.dtype,
        repeats: int, taylorseer: list[int], histories: list[int] = (), cachedit: list[str] = (),
        state_devices: list[str] = ()) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """One row per method (passes, per-call medians, r, and measured against ideal speedup), and the
    forecast-step floor: its median ms and its r against the same network pass."""
    transformer = build_transformer(setting.config, device, dtype)
    inputs = make_inputs(setting, device, dtype)
    probe = transformer.single_transformer_blocks[-1].attn.to_q
    rows: list[dict[str, Any]] = []

    def measure(label: str, through: Callable[..., Any] | None = None) -> dict[str, Any]:
        rows.append(measure_method(transformer, inputs, steps, device, probe, repeats, label, through))
        del rows[-1]["_output"]
        return rows[-1]

    full = measure("full")
    full_call = median([t for run_calls in full["calls"] for t, _ in run_calls])
    feature_elements = feature_size(setting)
    for alpha in alphas:
        for history, state_device in ((None, None), *((k, None) for k in histories),
                                      *((None, d) for d in state_devices)):
            config = SpectrumConfig(num_inference_steps=steps, flex_window=alpha, history=history,
                                    state_device=state_device)
            enable_spectrum(transformer, config)
            try:
                row = measure(f"spectrum alpha={alpha}" + (f" history={history}" if history else "")
                              + (f" state_device={state_device}" if state_device else ""))
                row.update(spectrum_figures(transformer, config, feature_elements))
            finally:
                disable_spectrum(transformer)
    for interval in taylorseer:
        with taylorseer_enabled(transformer, interval, dtype):
            measure(f"diffusers TaylorSeer N={interval} O=1")

    for name in cachedit:
        through, expected = cachedit_through(transformer, name, steps)
        row = measure(f"cache-dit {parse_method(name).peer.name.removeprefix('cachedit-')}", through)
        row["expected_passes"] = expected

    floor_seconds = forecast_floor(transformer, inputs, steps, device)
    floor = {"ms": 1000 * floor_seconds, "r": floor_seconds / full_call}
    for row in rows:
        derive(row, steps, full_call, full["total"])
    return rows, floor


def feature_size(setting: Setting) -> int:
    """Elements of the forecast feature: the head's input, image tokens x width."""
    return setting.image_side**2 * setting.config["num_attention_heads"] * setting.config["attention_head_dim"]


@contextlib.contextmanager
def taylorseer_enabled(transformer: torch.nn.Module, interval: int, dtype: torch.dtype) -> Iterator[None]:
    """diffusers' TaylorSeer (order 1, its default attention-only skipping) for the ``with`` block."""
    from diffusers import TaylorSeerCacheConfig

    transformer.enable_cache(TaylorSeerCacheConfig(cache_interval=interval, max_order=1, taylor_factors_dtype=dtype))
    try:
        yield
    finally:
        transformer.disable_cache()


def cachedit_through(transformer: torch.nn.Module, name: str, steps: int) -> tuple[Callable[..., Any], int | None]:
    """A sampler that runs the loop as a pipeline call with the cache-dit bench method ``name`` applied
    (cache-dit resets its cache per pipeline call), and the passes its step mask plans."""
    from spectrum_cache.bench.peers import cache_dit_applied

    settings = parse_method(name).peer
    pipe = LoopPipeline(transformer)

    def through(transformer, inputs, steps, timer):
        with cache_dit_applied(pipe, settings, steps, guidance_scale=1.0):
            return pipe(inputs, steps, timer)

    return through, settings.expected_passes(steps)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", choices=sorted(SETTINGS), default=None,
                        help="model size: flux-dev (the GPU default), mid (the CPU measurement) or smoke")
    parser.add_argument("--smoke", action="store_true", help="same as --config smoke")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--alphas", default="0.75,3.0", help="Spectrum flex_window values (default 0.75,3.0)")
    parser.add_argument("--taylorseer", default="4,6",
                        help="diffusers TaylorSeer cache intervals to include ('' for none; default 4,6)")
    parser.add_argument("--history", default="",
                        help="also time Spectrum's lower-memory fit to the last K recorded steps, e.g. 4,6 (default none)")
    parser.add_argument("--state-device", default="",
                        help="also time the default fit with its state on this device, e.g. cpu (default none)")
    parser.add_argument("--cachedit", default=None,
                        help="cache-dit methods as bench names (default cachedit-dbcache-a0.75,cachedit-taylorseer-a3.0 "
                             "where cache-dit is installed; '' for none)")
    parser.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default=None,
                        help="default: bfloat16 on a GPU (as FLUX ships), float32 on a CPU")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (default 2)")
    parser.add_argument("--repeats", type=int, default=1, help="timed runs per method; per-call medians pool them")
    args = parser.parse_args(argv)
    # The call timer's probe is a hook on a block's query projection: Spectrum rightly says it runs only on
    # compute steps, which is what the probe counts.
    warnings.filterwarnings("ignore", message=".*has hooks of its own", category=SpectrumWarning)

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    torch.set_num_threads(args.threads)
    name = "smoke" if args.smoke else args.config
    if name is None:
        name = "flux-dev" if device.type == "cuda" else "smoke"
        if device.type != "cuda":
            print("no GPU: running the smoke config (FLUX.1-dev at 1024x1024 needs a GPU; --config mid for the CPU figures)")
    setting = SETTINGS[name]
    dtype = getattr(torch, args.dtype) if args.dtype else (torch.bfloat16 if device.type == "cuda" else torch.float32)
    alphas = [float(a) for a in args.alphas.split(",") if a]
    intervals = [int(i) for i in args.taylorseer.split(",") if i]
    tokens = f"{setting.image_side ** 2} image + {setting.text_tokens} text tokens"
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"{setting.name}: {tokens}, {args.steps} steps, {str(dtype).removeprefix('torch.')}, {where}, "
          f"{'CUDA events' if device.type == 'cuda' else 'perf_counter'} per call")
    histories = [int(k) for k in args.history.split(",") if k]
    if args.cachedit is None:
        import importlib.util

        cachedit = list(DEFAULT_CACHEDIT) if importlib.util.find_spec("cache_dit") else []
        if not cachedit:
            print("cache-dit is not installed (pip install -e '.[peers]'): no cache-dit rows")
    else:
        cachedit = [m for m in args.cachedit.split(",") if m]
    state_devices = [d for d in args.state_device.split(",") if d]
    rows, floor = run(setting, args.steps, alphas, device, dtype, args.repeats, intervals, histories, cachedit,
                      state_devices)

    print("| method | passes | ideal speedup (N/passes) | pass ms (median) | cheap call ms (median) | r | "
          "speedup from per-call medians | of ideal | whole-run speedup | forecaster MiB (bytes per element) | peak GiB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        peak = "-" if r["peak_gib"] is None else f"{r['peak_gib']:.1f}"
        held = f"{r['held_bytes'] / 2**20:.1f} ({r['bytes_per_element']:.1f} B)" if "held_bytes" in r else "-"
        forecast = "-" if r["forecast_ms"] is None else f"{r['forecast_ms']:.2f}"
        print(f"| {r['method']} | {r['passes']} | {r['ideal']:.2f}x | {r['pass_ms']:.1f} | {forecast} | "
              f"{r['r']:.2%} | {r['per_call_speedup']:.2f}x | {r['of_ideal']:.1%} | {r['total_speedup']:.2f}x | "
              f"{held} | {peak} |")
    spectrum = [r for r in rows if r["method"].startswith("spectrum") and "history" not in r["method"]
                and "state_device" not in r["method"]]
    for r in rows:  # what keeping the state in host memory adds, against the same alpha on the device
        base = next((b for b in rows if b["method"] == r["method"].split(" state_device=")[0]), None)
        if "state_device" in r["method"] and base is not None:
            print(f"{r['method']}: adds {(r['pass_ms'] - base['pass_ms']) / full_pass(rows):+.2%} of a network pass "
                  f"to a compute call and {(r['forecast_ms'] - base['forecast_ms']) / full_pass(rows):+.2%} to a "
                  f"forecast call (per-call medians)")
    if spectrum:
        best = ", ".join(f"{r['passes'] / (r['passes'] + (args.steps - r['passes']) * floor['r']):.1%} at "
                         f"{r['method'].removeprefix('spectrum ')}" for r in spectrum)
        print(f"forecast-step floor (embedders + time embedding + forecast + head, no hooks): {floor['ms']:.2f} ms, "
              f"r {floor['r']:.2%}; the most of ideal any forecast step this cheap allows: {best}")
    if device.type == "cpu":
        import resource

        print(f"peak resident memory of this process (all methods): {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
