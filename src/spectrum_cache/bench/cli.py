"""The ``spectrum-cache bench`` subcommand: quality against speedup for Spectrum and the alternatives.

    spectrum-cache bench                                   # embedded model, bundled prompts, every method
    spectrum-cache bench --methods full,steps-14,spectrum-a0.75-w0.5 --steps 50 --out results/x
    torchrun --nproc_per_node 2 -m spectrum_cache.cli bench ...   # prompts spread over 2 processes
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

DEFAULT_OUT = Path("results/bench")


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``bench`` on the ``spectrum-cache`` command."""
    p = subparsers.add_parser(
        "bench",
        help="quality against speedup for Spectrum and the alternatives",
        description="Run the full sampler, step-matched plain samplers, Spectrum, the in-house forecasters and "
        "diffusers' caches with the same prompts and seeds; write JSON records, a Markdown table, a plot "
        "and an image grid. A rerun with the same --out skips finished items. Start it with "
        "`accelerate launch` or `torchrun` to spread the prompts over several processes.",
    )
    p.add_argument("--model", default=None, help="a diffusers pipeline id or folder (default: the embedded model)")
    p.add_argument("--prompts", type=Path, default=None, help="file with one prompt per line (default: the bundled list)")
    p.add_argument("--num-prompts", type=int, default=None, help="use only the first N prompts")
    p.add_argument("--methods", default=None,
                   help="comma-separated subset, e.g. full,steps-14,spectrum-a0.75-w0.5,reuse-a0.75,diffusers-fbc "
                        "(default: all; full is always added as the reference)")
    p.add_argument("--steps", type=int, default=50, help="denoising steps of the full sampler (default 50)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"results folder (default {DEFAULT_OUT})")
    p.add_argument("--seed", type=int, default=0, help="seed of prompt 0; prompt i uses seed + i (default 0)")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--guidance-scale", type=float, default=None, help="classifier-free guidance scale (pipeline default)")
    p.add_argument("--repeats", type=int, default=1, help="time each item this many times, keep the fastest (default 1)")
    p.add_argument("--extra-metrics", choices=("auto", "off"), default="auto",
                   help="LPIPS, CLIP score, ImageReward where their weights load (default auto)")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads per process (default: 1 for the embedded model, else all cores shared out)")
    p.set_defaults(handler=run)
    return p


def _usage_error(message: str) -> Exception:
    from ..cli import USAGE_ERROR, CommandError

    return CommandError(message, USAGE_ERROR)


def _options(args: argparse.Namespace) -> Any:
    """Validate the arguments into BenchOptions; every problem is a one-line usage error."""
    import torch

    from .methods import default_methods, parse_methods
    from .prompts import load_prompts
    from .runner import BenchOptions

    for name in ("steps", "repeats"):
        if getattr(args, name) < 1:
            raise _usage_error(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.num_prompts is not None and args.num_prompts < 1:
        raise _usage_error(f"--num-prompts must be >= 1, got {args.num_prompts}")
    if args.threads is not None and args.threads < 1:
        raise _usage_error(f"--threads must be >= 1, got {args.threads}")
    try:
        methods = default_methods(args.steps) if args.methods is None else parse_methods(args.methods, args.steps)
    except ValueError as error:
        raise _usage_error(f"--methods: {error}") from None
    try:
        prompts = load_prompts(args.prompts)
    except (OSError, ValueError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
        raise _usage_error(f"--prompts {args.prompts}: {reason}") from None
    if args.num_prompts is not None:
        prompts = prompts[: args.num_prompts]
    if args.device is not None:
        try:
            torch.empty(0, device=args.device)
        except (RuntimeError, AssertionError) as error:
            raise _usage_error(f"--device {args.device!r} is not usable here ({str(error).splitlines()[0]})") from None
    if args.out.exists() and not args.out.is_dir():
        raise _usage_error(f"--out {args.out} is a file, not a folder")
    return BenchOptions(
        out=args.out, methods=tuple(methods), prompts=tuple(prompts), steps=args.steps, seed=args.seed,
        model=args.model, device=args.device, guidance_scale=args.guidance_scale, repeats=args.repeats,
        extra_metrics=args.extra_metrics == "auto", threads=args.threads,
    )


def run(args: argparse.Namespace) -> int:
    """Handler of ``spectrum-cache bench``: 0, or 2 for bad input / 1 for a failure, after one line on stderr."""
    from ..cli import CommandError
    from .report import markdown_table
    from .runner import BenchError, run_bench

    try:
        options = _options(args)
        try:
            result = run_bench(options)
        except BenchError as error:
            raise _usage_error(str(error)) from None
    except CommandError as error:
        # Reported here, not re-raised: under `python -m spectrum_cache.cli` (the form torchrun runs) the
        # running main() lives in __main__ and catches its own copy of CommandError, not this one.
        print(f"spectrum-cache: error: {error}", file=sys.stderr)
        return error.code
    if "rows" in result:  # the main process
        print(markdown_table(result["rows"]), end="")
        print(f"ran {result['ran']} items here, {result['skipped']} already done; results in {options.out}/ "
              f"(table.md, quality_vs_speedup.png, grid.png, records/)")
    return 0
