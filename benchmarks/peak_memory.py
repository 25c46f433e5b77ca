"""The peak memory of one generation: the full sampler against Spectrum, on a mid-size FLUX and a mid-size Wan.

    python benchmarks/peak_memory.py                       # CPU: both models, 30 steps
    python benchmarks/peak_memory.py --models wan --steps 50
    python benchmarks/peak_memory.py --device cuda         # torch.cuda.max_memory_allocated instead

Random-initialised transformers of the real diffusers classes run their pipelines (prompt embeddings passed in,
``output_type="latent"``, no VAE):

- FLUX.1 (FluxPipeline, no CFG): 4 dual + 8 single blocks, width 512 (8 heads x 64), in 64, text 512, pooled
  256 (the CPU size of benchmarks/flux_transformer_speed.py), 512x512 pixels: 1024 image + 64 text tokens.
- Wan2.1 (WanPipeline, CFG in cond / uncond contexts): 4 blocks, width 512 (8 heads x 64), ffn 1024, 16 latent
  channels, text 256, 17 frames at 160x256: 5 x 10 x 16 = 800 tokens.

The peak is the most bytes of torch tensors alive at once during the pipeline call, above what was alive
before it. On CPU torch keeps no allocator statistics, so it is read from the profiler's memory events (each
tensor allocation and free on the CPU allocator, in order; ``profile_memory=True``); on CUDA it is
``max_memory_allocated`` after ``reset_peak_memory_stats``. Spectrum runs ``SpectrumConfig(flex_window=0.75)``
with the default history, with the full fit (``history=None``) and with the window in host memory
(``state_device="cpu"``). The check (issue 28): Spectrum's peak is at most the full sampler's plus what its
forecasters report holding (the summary's ``peak_bytes``, summed over branches) and the stand-ins'
``stand_in_bytes``.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "src"))

from spectrum_cache import SpectrumConfig, disable_spectrum, enable_spectrum, spectrum_summary  # noqa: E402

FLUX_MID = dict(patch_size=1, in_channels=64, num_layers=4, num_single_layers=8, attention_head_dim=64,
                num_attention_heads=8, joint_attention_dim=512, pooled_projection_dim=256, guidance_embeds=True,
                axes_dims_rope=(8, 28, 28))
WAN_MID = dict(patch_size=(1, 2, 2), num_attention_heads=8, attention_head_dim=64, in_channels=16, out_channels=16,
               text_dim=256, freq_dim=64, ffn_dim=1024, num_layers=4, cross_attn_norm=True,
               qk_norm="rms_norm_across_heads", rope_max_seq_len=1024)


def build(model: str, device: torch.device, steps: int):
    """(pipeline, call arguments) of one model."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    torch.manual_seed(0)
    if model == "flux":
        from diffusers import FluxPipeline, FluxTransformer2DModel

        transformer = FluxTransformer2DModel(**FLUX_MID).to(device)
        pipe = FluxPipeline(scheduler=FlowMatchEulerDiscreteScheduler(), vae=None, text_encoder=None,
                            tokenizer=None, text_encoder_2=None, tokenizer_2=None, transformer=transformer)
        pipe.vae_scale_factor = 8  # no VAE: FLUX's 8x, so 512 px are 64 latent rows, 32 packed tokens
        kwargs = dict(prompt_embeds=torch.randn(1, 64, 512, device=device),
                      pooled_prompt_embeds=torch.randn(1, 256, device=device), height=512, width=512,
                      guidance_scale=3.5)
    else:
        from diffusers import WanPipeline, WanTransformer3DModel

        transformer = WanTransformer3DModel(**WAN_MID).to(device)
        pipe = WanPipeline(tokenizer=None, text_encoder=None, vae=None, transformer=transformer,
                           scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0))
        kwargs = dict(prompt_embeds=torch.randn(1, 32, 256, device=device),
                      negative_prompt_embeds=torch.randn(1, 32, 256, device=device), height=160, width=256,
                      num_frames=17, guidance_scale=5.0)
    pipe.set_progress_bar_config(disable=True)
    return pipe, dict(kwargs, num_inference_steps=steps, output_type="latent")


def peak_bytes(pipe, kwargs: dict, device: torch.device) -> int:
    """The most tensor bytes alive at once during one call, above those alive before it."""
    generator = torch.Generator("cpu").manual_seed(0)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        pipe(**kwargs, generator=generator)
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        pipe(**kwargs, generator=generator)
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events() if e.name() == "[memory]")
    alive = peak = 0
    for _, nbytes in events:
        alive += nbytes
        peak = max(peak, alive)
    return peak


RUNS = {
    "full sampler": None,
    "spectrum (default: the full fit)": SpectrumConfig(flex_window=0.75),
    "spectrum, full fit, state_device='cpu'": SpectrumConfig(flex_window=0.75, state_device="cpu"),
    "spectrum, history=5": SpectrumConfig(flex_window=0.75, history=5),
    "spectrum, history=5, state_device='cpu'": SpectrumConfig(flex_window=0.75, history=5, state_device="cpu"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="flux,wan", help="comma-separated: flux, wan (default both)")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    from diffusers.utils import logging

    logging.set_verbosity_error()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"device {device}, {args.steps} steps, torch {torch.__version__}")
    print("| model | run | passes | peak (MiB) | above full sampler (MiB) | forecaster + stand-ins held (MiB) | within "
          "| excess (bytes) |")
    print("|---|---|---|---|---|---|---|---|")
    mib = 2**20
    for model in args.models.split(","):
        pipe, kwargs = build(model, device, args.steps)
        full = None
        with torch.no_grad():
            for name, config in RUNS.items():
                if config is not None:
                    enable_spectrum(pipe, config)
                peak = peak_bytes(pipe, kwargs, device)
                if config is None:
                    full = peak
                    print(f"| {model} | {name} | {args.steps} | {peak / mib:.1f} | - | - | - | - |")
                    continue
                branches = spectrum_summary(pipe).branches
                held = sum(b.peak_bytes + b.stand_in_bytes for b in branches)
                passes = max(len(b.computed_steps) for b in branches)
                disable_spectrum(pipe)
                within = "yes" if peak <= full + held else "NO"
                print(f"| {model} | {name} | {passes} | {peak / mib:.1f} | {(peak - full) / mib:+.1f} | "
                      f"{held / mib:.1f} | {within} | {max(0, peak - full - held):,} |")


if __name__ == "__main__":
    main()
