"""Measured speedup of Spectrum on a FLUX.1-dev-sized transformer, against the ideal N / passes.

    python benchmarks/flux_transformer_speed.py            # GPU: FLUX.1-dev config, bf16, 1024x1024
    python benchmarks/flux_transformer_speed.py --smoke    # a scaled-down config (also the CPU default)

Builds FluxTransformer2DModel with FLUX.1-dev's published config (19 dual-stream blocks, 38 single-stream
blocks, 24 heads x 128, joint_attention_dim 4096, pooled 768, in_channels 64, guidance embedding, rope
axes (16, 56, 56)) and random weights (no download: speed does not depend on the values), then times a
50-step Euler loop over 4096 image tokens (1024x1024 after the VAE and 2x2 packing) and 512 text tokens:
first the plain loop, then with Spectrum (``enable_spectrum`` on the bare transformer) at alpha 0.75 and
3.0. Times are CUDA events on a GPU and perf_counter on a CPU; one untimed run of each comes first.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from diffusers import FluxTransformer2DModel

from spectrum_cache import SpectrumConfig, compute_steps
from spectrum_cache.integrations import disable_spectrum, enable_spectrum, spectrum_summary

# FLUX.1-dev's transformer/config.json.
FLUX_DEV = dict(
    patch_size=1, in_channels=64, out_channels=None, num_layers=19, num_single_layers=38, attention_head_dim=128,
    num_attention_heads=24, joint_attention_dim=4096, pooled_projection_dim=768, guidance_embeds=True,
    axes_dims_rope=(16, 56, 56),
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
SMOKE_SIZE = Setting("smoke (scaled-down FLUX)", SMOKE, image_side=8, text_tokens=16)


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


@torch.no_grad()
def sample(transformer: torch.nn.Module, inputs: dict[str, torch.Tensor], steps: int) -> torch.Tensor:
    """A flow-matching Euler loop, sigma 1 -> 0, as FLUX's scheduler runs it (timestep = sigma)."""
    sigmas = torch.linspace(1.0, 0.0, steps + 1)
    x = inputs["hidden_states"]
    for i in range(steps):
        timestep = torch.full((1,), float(sigmas[i]), device=x.device, dtype=x.dtype)
        velocity = transformer(**{**inputs, "hidden_states": x}, timestep=timestep, return_dict=False)[0]
        x = x + (sigmas[i + 1] - sigmas[i]).item() * velocity
    return x


def timed(device: torch.device, fn: Callable[[], Any]) -> float:
    """Seconds for fn(): CUDA events on a GPU (device time of the queued work), perf_counter elsewhere."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize(device)
        return start.elapsed_time(end) / 1000
    start_time = time.perf_counter()
    fn()
    return time.perf_counter() - start_time


def run(setting: Setting, steps: int, alphas: list[float], device: torch.device, dtype: torch.dtype, repeats: int) -> list[dict[str, Any]]:
    """Baseline and Spectrum rows: seconds (fastest of ``repeats``), passes, ideal and measured speedup."""
    transformer = build_transformer(setting.config, device, dtype)
    inputs = make_inputs(setting, device, dtype)
    rows = []

    def measure(label: str, passes: int) -> float:
        sample(transformer, inputs, steps)  # untimed: first-call costs, and Spectrum's first fit
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        seconds = min(timed(device, lambda: sample(transformer, inputs, steps)) for _ in range(repeats))
        peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
        rows.append({"method": label, "passes": passes, "seconds": seconds, "peak_gib": peak})
        return seconds

    baseline = measure("full", steps)
    for alpha in alphas:
        config = SpectrumConfig(num_inference_steps=steps, flex_window=alpha)
        enable_spectrum(transformer, config)
        try:
            measure(f"spectrum alpha={alpha}", len(compute_steps(config)))
            computed = spectrum_summary(transformer).branches[0].computed_steps
            assert len(computed) == rows[-1]["passes"], (computed, rows[-1])
        finally:
            disable_spectrum(transformer)
    for row in rows:
        row["ideal"] = steps / row["passes"]
        row["speedup"] = baseline / row["seconds"]
        row["of_ideal"] = row["speedup"] / row["ideal"]
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="scaled-down config (the default without a GPU)")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--alphas", default="0.75,3.0", help="Spectrum flex_window values (default 0.75,3.0)")
    parser.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    parser.add_argument("--repeats", type=int, default=1, help="timed runs per method; the fastest counts")
    args = parser.parse_args(argv)

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    smoke = args.smoke or device.type != "cuda"
    if smoke and not args.smoke:
        print("no GPU: running the scaled-down smoke config (FLUX.1-dev at 1024x1024 needs a GPU)")
    setting = SMOKE_SIZE if smoke else FULL_SIZE
    # bf16 as FLUX ships; float32 for the CPU smoke run, where bf16 matmuls are slow and prove nothing.
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    alphas = [float(a) for a in args.alphas.split(",")]
    tokens = f"{setting.image_side ** 2} image + {setting.text_tokens} text tokens"
    print(f"{setting.name}: {tokens}, {args.steps} steps, {str(dtype).removeprefix('torch.')}, "
          f"{torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'}, "
          f"{'CUDA events' if device.type == 'cuda' else 'perf_counter'}")
    rows = run(setting, args.steps, alphas, device, dtype, args.repeats)

    print("| method | passes | seconds | ideal speedup (N/passes) | measured speedup | measured / ideal | peak GiB |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        peak = "-" if r["peak_gib"] is None else f"{r['peak_gib']:.1f}"
        print(f"| {r['method']} | {r['passes']} | {r['seconds']:.3f} | {r['ideal']:.2f}x | {r['speedup']:.2f}x | "
              f"{r['of_ideal']:.0%} | {peak} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
