"""Spectrum's host overhead per denoiser call, on tiny FLUX, Wan and SDXL denoisers whose compute is about zero,
so what is left is host time: plain calls, Spectrum's compute and forecast calls, and the floor; and the host
syncs per call.

    python benchmarks/host_overhead.py                # 50 steps, 3 runs of each, CPU
    python benchmarks/host_overhead.py --steps 20 --runs 1   # quicker

Each denoiser runs in its real diffusers pipeline (prompt embeddings given, latents out), so the scheduler
advances as in a generation. Every call of the denoiser is timed (perf_counter around the module's call, torch
hooks outside Spectrum's) and classed by the step it belongs to: a compute call where Spectrum's summary lists
the step as computed, a forecast call otherwise. Figures are per-call medians over ``--runs`` runs:

- plain: the pipeline without Spectrum;
- compute / plain: a Spectrum call that runs the network, against a plain call (goal <= 1.10);
- forecast / floor: a Spectrum forecast call against the floor, the same model's call with its block lists
  emptied (and a UNet's mid block passed through), no Spectrum: the embedders, the time embedding and the
  head, which a forecast step must run (goal <= 2.0);
- syncs: host syncs per Spectrum call (``aten._local_scalar_dense``, ``aten.is_nonzero``, ``aten.equal``,
  ``aten.item``, counted with a TorchDispatchMode in a separate, untimed run) with Spectrum's accelerator code
  path forced on the CPU (its per-step host checks off, as on a GPU). Goal: 0.

The tiny models make the host's share as large as it gets: on a real model the same microseconds are a
negligible part of a compute call, but a forecast call is little else.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "src"))

from spectrum_cache import SpectrumConfig, disable_spectrum, enable_spectrum, spectrum_summary  # noqa: E402
from spectrum_cache.integrations import hooks as spectrum_hooks  # noqa: E402
from spectrum_cache.integrations.adapters import resolve_adapter  # noqa: E402

SYNC_OPS = ("_local_scalar_dense", "is_nonzero", "equal", "item")
GOALS = {"compute / plain": 1.10, "forecast / floor": 2.0, "syncs per call": 0}


def build(family: str) -> tuple[Any, nn.Module, dict[str, Any]]:
    """(pipeline, denoiser, call arguments) of a tiny model; every width differs."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    torch.manual_seed(0)
    if family == "flux":
        from diffusers import FluxPipeline, FluxTransformer2DModel

        denoiser = FluxTransformer2DModel(patch_size=1, in_channels=16, num_layers=1, num_single_layers=2,
                                          attention_head_dim=16, num_attention_heads=2, joint_attention_dim=24,
                                          pooled_projection_dim=20, axes_dims_rope=(4, 6, 6))
        pipe = FluxPipeline(scheduler=FlowMatchEulerDiscreteScheduler(), vae=None, text_encoder=None, tokenizer=None,
                            text_encoder_2=None, tokenizer_2=None, transformer=denoiser)
        pipe.vae_scale_factor = 8
        kwargs = dict(prompt_embeds=torch.randn(1, 6, 24), pooled_prompt_embeds=torch.randn(1, 20), height=32,
                      width=48)
    elif family == "wan":
        from diffusers import WanPipeline, WanTransformer3DModel

        denoiser = WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=16,
                                         in_channels=16, out_channels=16, text_dim=24, freq_dim=8, ffn_dim=40,
                                         num_layers=2, cross_attn_norm=True, qk_norm="rms_norm_across_heads",
                                         rope_max_seq_len=32)
        pipe = WanPipeline(tokenizer=None, text_encoder=None, vae=None, transformer=denoiser,
                           scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0))
        kwargs = dict(prompt_embeds=torch.randn(1, 6, 24), negative_prompt_embeds=torch.randn(1, 6, 24), height=32,
                      width=48, num_frames=5, guidance_scale=5.0)
    else:
        from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel

        denoiser = UNet2DConditionModel(
            block_out_channels=(16, 32), layers_per_block=1, sample_size=8, in_channels=4, out_channels=4,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), attention_head_dim=(2, 4),
            use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=8,
            transformer_layers_per_block=(1, 1), projection_class_embeddings_input_dim=20 + 6 * 8,
            cross_attention_dim=24, norm_num_groups=8)
        pipe = StableDiffusionXLPipeline(vae=None, text_encoder=None, text_encoder_2=None, tokenizer=None,
                                         tokenizer_2=None, unet=denoiser, scheduler=EulerDiscreteScheduler(
                                             beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear"))
        kwargs = dict(prompt_embeds=torch.randn(1, 5, 24), pooled_prompt_embeds=torch.randn(1, 20),
                      negative_prompt_embeds=torch.randn(1, 5, 24), negative_pooled_prompt_embeds=torch.randn(1, 20),
                      height=64, width=96, guidance_scale=5.0)
    pipe.set_progress_bar_config(disable=True)
    return pipe, denoiser, dict(kwargs, output_type="latent")


class _Passthrough(nn.Module):
    """A UNet mid block that is not there: returns the sample it is given."""

    def forward(self, hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        return hidden_states


def floor_model(denoiser: nn.Module) -> nn.Module:
    """A copy of ``denoiser`` with every block Spectrum skips taken out: its lists empty, single blocks passed
    through. Its call is what a forecast step cannot skip (embedders, time embedding, head)."""
    bare = copy.deepcopy(denoiser)
    for parent, name in resolve_adapter(bare).block_slots:
        module = parent._modules[name]
        parent._modules[name] = nn.ModuleList() if isinstance(module, nn.ModuleList) else _Passthrough()
    return bare


def timed_calls(pipe: Any, denoiser: nn.Module, kwargs: dict[str, Any]) -> list[float]:
    """Seconds of each call of ``denoiser`` in one pipeline call, in order."""
    starts: list[float] = []
    seconds: list[float] = []
    pre = denoiser.register_forward_pre_hook(lambda module, args: starts.append(time.perf_counter()))
    post = denoiser.register_forward_hook(lambda module, args, out: seconds.append(time.perf_counter() - starts[-1]))
    try:
        pipe(**kwargs, generator=torch.Generator().manual_seed(0))
    finally:
        pre.remove()
        post.remove()
    return seconds


class _SyncCounter(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        if func.overloadpacket.__name__ in SYNC_OPS:
            self.count += 1
        return func(*args, **(kwargs or {}))


def syncs_per_call(pipe: Any, denoiser: nn.Module, kwargs: dict[str, Any]) -> list[int]:
    """Host syncs inside each Spectrum call of the denoiser, with the accelerator path's checks (none per step)."""
    counts: list[int] = []
    mode = _SyncCounter()
    pre = denoiser.register_forward_pre_hook(lambda module, args: setattr(mode, "count", 0))
    post = denoiser.register_forward_hook(lambda module, args, out: counts.append(mode.count))
    checks_on_host = spectrum_hooks.checks_on_host
    spectrum_hooks.checks_on_host = lambda tensor: False  # as on an accelerator
    try:
        with mode:
            pipe(**kwargs, generator=torch.Generator().manual_seed(0))
    finally:
        spectrum_hooks.checks_on_host = checks_on_host
        pre.remove()
        post.remove()
    return counts


def measure(family: str, steps: int, runs: int) -> dict[str, Any]:
    pipe, denoiser, kwargs = build(family)
    kwargs = dict(kwargs, num_inference_steps=steps)
    plain: list[float] = []
    compute: list[float] = []
    forecast: list[float] = []
    floor: list[float] = []
    bare = floor_model(denoiser)
    component = "unet" if family == "sdxl" else "transformer"

    def with_floor_model(run: Callable[[], list[float]]) -> list[float]:
        setattr(pipe, component, bare)
        try:
            return run()
        finally:
            setattr(pipe, component, denoiser)

    timed_calls(pipe, denoiser, kwargs)  # warm-up
    for _ in range(runs):
        plain += timed_calls(pipe, denoiser, kwargs)
        floor += with_floor_model(lambda: timed_calls(pipe, bare, kwargs))
        enable_spectrum(pipe, SpectrumConfig())
        try:
            seconds = timed_calls(pipe, denoiser, kwargs)
            computed = set(spectrum_summary(pipe).branches[0].computed_steps)
        finally:
            disable_spectrum(pipe)
        per_step = len(seconds) // steps  # Wan's two CFG calls per step; FLUX and SDXL one
        for index, value in enumerate(seconds):
            (compute if index // per_step in computed else forecast).append(value)
    enable_spectrum(pipe, SpectrumConfig())
    try:
        syncs = syncs_per_call(pipe, denoiser, kwargs)
    finally:
        disable_spectrum(pipe)
    ms = {name: statistics.median(values) * 1e3 for name, values in
          (("plain", plain), ("compute", compute), ("forecast", forecast), ("floor", floor))}
    return dict(family=family, **ms, compute_ratio=ms["compute"] / ms["plain"],
                forecast_ratio=ms["forecast"] / ms["floor"], syncs=max(syncs), syncs_total=sum(syncs),
                calls=len(syncs))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--families", default="flux,wan,sdxl")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"{args.steps} steps, {args.runs} runs, {args.threads} thread(s), torch {torch.__version__}, "
          f"1-minute load average {load:.1f} at the start")
    print("| denoiser | plain call ms | compute call ms | forecast call ms | floor ms | compute / plain (goal <= 1.10) "
          "| forecast / floor (goal <= 2.0) | host syncs per call, most (all calls) |")
    print("|---|---|---|---|---|---|---|---|")
    for family in args.families.split(","):
        r = measure(family, args.steps, args.runs)
        print(f"| {family} | {r['plain']:.3f} | {r['compute']:.3f} | {r['forecast']:.3f} | {r['floor']:.3f} | "
              f"{r['compute_ratio']:.2f} | {r['forecast_ratio']:.2f} | {r['syncs']} ({r['syncs_total']} in "
              f"{r['calls']} calls) |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
