"""Floating-point operations of the embedded model's training: one step (forward and backward of the
denoiser and the text encoder on one batch) and a whole run of --steps.

    python benchmarks/training_flops.py                                # the shipped recipe, 9502 steps
    python benchmarks/training_flops.py --patch 4 --steps 3789         # any flags of embedded.train

Counted by torch.utils.flop_counter.FlopCounterMode (two per multiply-add; matrix products and
attention, not element-wise work), on step 0's batch of the run the flags describe. Also prints the
median time of a few steps on this machine, for the achieved rate. Nothing is trained or written.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from spectrum_cache.embedded import train  # noqa: E402


def parse_args(argv: list[str]) -> argparse.Namespace:
    """embedded.train's flags; --steps defaults to the shipped run's 9502."""
    if "--steps" not in argv:
        argv = [*argv, "--steps", "9502"]
    return train.parse_args(["--out", "unused", *argv])


def step_flops(args: argparse.Namespace) -> tuple[int, float, int]:
    """(FLOPs of one training step, median seconds of one, transformer parameters) for train's flags."""
    torch.set_num_threads(args.threads)
    tokenizer, transformer, text_encoder = train.models_for(args)

    def one_step(step: int) -> None:
        batch = train.training_batch(step, args, tokenizer)
        train.flow_loss(transformer, text_encoder, batch, args.prediction, args.position_unit).backward()

    with FlopCounterMode(display=False) as counter:
        one_step(0)
    times = []
    for step in range(1, 6):
        start = time.perf_counter()
        one_step(step)
        times.append(time.perf_counter() - start)
    return counter.get_total_flops(), statistics.median(times), sum(p.numel() for p in transformer.parameters())


def main(argv: list[str] | None = None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    flops, seconds, params = step_flops(args)
    print(f"transformer: {params / 1e6:.2f} M parameters")
    print(f"one training step: {flops / 1e9:.1f} GFLOP (median {seconds:.2f} s of forward and backward here, "
          f"{flops / seconds / 1e9:.0f} GFLOP/s)")
    print(f"{args.steps} steps: {flops * args.steps / 1e15:.2f} PFLOP")


if __name__ == "__main__":
    main()
