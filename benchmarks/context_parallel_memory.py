"""Forecaster memory per rank under diffusers' Ulysses context parallelism, against one process.

    python benchmarks/context_parallel_memory.py                 # launches itself: torchrun, 2 ranks, gloo, CPU
    python benchmarks/context_parallel_memory.py --ranks 4 --height 1024 --width 1024
    python -m torch.distributed.run --standalone --nproc_per_node 2 benchmarks/context_parallel_memory.py

A mid-size random-initialised FLUX.1-architecture transformer (in_channels 64, inner 256 = 4 heads of 64,
text 96, pooled 80, 2 double- and 4 single-stream blocks) runs FluxPipeline with ``prompt_embeds`` and
``output_type="latent"`` for ``--steps`` steps with ``SpectrumConfig(flex_window=0.75)``: once in one
process (rank 0, no parallelism), then on every rank with
``transformer.enable_parallelism(config=ContextParallelConfig(ulysses_degree=world_size))`` followed by
``enable_spectrum(pipe, ...)``. Rank 0 prints, per rank, the forecaster's peak bytes and the stand-ins'
bytes from ``spectrum_summary``, the single-process figures, and how far the latents are from the
single-process ones. On a GPU machine, run it with ``--device cuda`` (one GPU per rank, NCCL).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import subprocess
import sys

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "src"))

INNER, HEADS, TEXT_DIM, POOLED_DIM, TEXT_TOKENS = 256, 4, 96, 80, 64


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ranks", type=int, default=2, help="processes = ulysses degree (divides the 4 heads)")
    parser.add_argument("--height", type=int, default=512)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--steps", type=int, default=28)
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    return parser.parse_args(argv)


def _pipeline(args: argparse.Namespace, device: torch.device):
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel

    torch.manual_seed(0)
    transformer = FluxTransformer2DModel(
        patch_size=1, in_channels=64, num_layers=2, num_single_layers=4, attention_head_dim=INNER // HEADS,
        num_attention_heads=HEADS, joint_attention_dim=TEXT_DIM, pooled_projection_dim=POOLED_DIM,
        axes_dims_rope=(16, 24, 24),
    )
    dtype = getattr(torch, args.dtype)
    pipe = FluxPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(), vae=None, text_encoder=None, tokenizer=None,
        text_encoder_2=None, tokenizer_2=None, transformer=transformer.to(device, dtype),
    )
    pipe.set_progress_bar_config(disable=True)
    kwargs = dict(
        prompt_embeds=torch.randn(1, TEXT_TOKENS, TEXT_DIM).to(device, dtype),
        pooled_prompt_embeds=torch.randn(1, POOLED_DIM).to(device, dtype),
        height=args.height, width=args.width, num_inference_steps=args.steps, guidance_scale=3.5,
        output_type="latent", generator=torch.Generator().manual_seed(1),
    )
    return pipe, kwargs


def _generate(args: argparse.Namespace, device: torch.device, parallel: bool) -> dict:
    from spectrum_cache import SpectrumConfig, enable_spectrum, spectrum_summary

    pipe, kwargs = _pipeline(args, device)
    if parallel:
        from diffusers import ContextParallelConfig

        pipe.transformer.enable_parallelism(
            config=ContextParallelConfig(ulysses_degree=torch.distributed.get_world_size())
        )
    enable_spectrum(pipe, SpectrumConfig(flex_window=0.75))
    with torch.no_grad():
        latents = pipe(**kwargs).images.float().cpu()
    (branch,) = spectrum_summary(pipe).branches  # FluxPipeline: one call per step, the "cond" context
    return {"latents": latents, "branch": dataclasses.asdict(branch)}


def _worker(args: argparse.Namespace) -> None:
    torch.set_num_threads(1)
    from diffusers.utils import logging

    logging.set_verbosity_error()
    if args.device == "cpu":
        # diffusers picks device = rank % torch.accelerator.device_count(), which is 0 on a CPU-only torch.
        torch.accelerator.device_count = lambda: 1
        torch.distributed.init_process_group(backend="gloo")
        device = torch.device("cpu")
    else:
        torch.distributed.init_process_group(backend="nccl")
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(device)
    rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
    try:
        single = _generate(args, device, parallel=False) if rank == 0 else None
        mine = _generate(args, device, parallel=True)
        gathered = [None] * world
        torch.distributed.all_gather_object(gathered, mine)
    finally:
        torch.distributed.destroy_process_group()
    if rank != 0:
        return
    _report(args, world, single, gathered)


def _report(args: argparse.Namespace, world: int, single: dict, ranks: list[dict]) -> None:
    tokens = (args.height // 16) * (args.width // 16)
    ref = single["branch"]
    print(f"FLUX.1-architecture transformer, inner {INNER}, {tokens} image tokens ({args.height}x{args.width} px), "
          f"{TEXT_TOKENS} text tokens, {args.dtype}, {args.steps} steps, flex_window 0.75, ulysses_degree {world}")
    print(f"feature (head input, image tokens): single process 1 x {tokens} x {INNER}, "
          f"per rank 1 x {tokens // world} x {INNER}")
    print(f"computed steps: {list(ref['computed_steps'])} ({len(ref['forecast_steps'])} forecast)")
    header = ("rank", "forecaster peak", "single process", "ratio", "stand-ins", "single process",
              "same steps", "max |diff| vs single")
    rows = [header]
    for rank, got in enumerate(ranks):
        b = got["branch"]
        rows.append((
            str(rank), f"{b['peak_bytes']} B", f"{ref['peak_bytes']} B", f"{b['peak_bytes'] / ref['peak_bytes']:.4f}",
            f"{b['stand_in_bytes']} B", f"{ref['stand_in_bytes']} B",
            str(b["computed_steps"] == ref["computed_steps"] and b["forecast_steps"] == ref["forecast_steps"]),
            f"{(got['latents'] - single['latents']).abs().max().item():.1e}",
        ))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    elements = tokens * INNER
    print(f"bytes per feature element: single process {ref['peak_bytes'] / elements:.3f}, "
          f"per rank {ranks[0]['branch']['peak_bytes'] / (elements / world):.3f}")


def main(argv: list[str]) -> int:
    args = _parse(argv)
    if "LOCAL_RANK" in os.environ:
        _worker(args)
        return 0
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={args.ranks}",
               os.path.abspath(__file__), *argv]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore::FutureWarning"}
    return subprocess.call(command, env=env)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
