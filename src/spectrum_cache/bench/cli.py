"""The ``spectrum-cache bench`` subcommand: quality against speedup for Spectrum and the alternatives.

    spectrum-cache bench                                   # embedded model, bundled prompts, every method
    spectrum-cache bench --methods full,steps-14,spectrum-a0.75-w0.5 --steps 50 --out results/x
    torchrun --nproc_per_node 2 -m spectrum_cache.cli bench ...   # prompts spread over 2 processes
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..errors import CommandError, exit_at_once_on_interrupt, usage_error
from ..options import MAX_SEED, add_verbose, guidance_float, positive_int, seed_int, shift_float

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
    p.add_argument("--model", default=None, metavar="ID_OR_FOLDER",
                   help="a diffusers pipeline id or folder (default: the embedded model)")
    p.add_argument("--prompts", type=Path, default=None, metavar="FILE",
                   help="file with one prompt per line (default: the bundled list)")
    p.add_argument("--calibration-prompts", type=Path, default=None, metavar="FILE",
                   help="prompts the spectrum-planned-pK methods calibrate on, none of them among --prompts (default "
                        "for the embedded model: its bundled calibration prompts; needed for them with --model)")
    p.add_argument("--num-prompts", type=positive_int, default=None, metavar="N", help="use only the first N prompts")
    p.add_argument("--methods", default=None, metavar="LIST",
                   help="comma-separated subset, e.g. full,steps-14,spectrum-a0.75-w0.5,reuse-a0.75,diffusers-fbc "
                        "(default: all; full is always added as the reference)")
    p.add_argument("--steps", type=positive_int, default=50, metavar="N", help="denoising steps of the full sampler (default 50)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, metavar="FOLDER", help=f"results folder (default {DEFAULT_OUT})")
    p.add_argument("--seed", type=seed_int, default=0, metavar="N", help="seed of prompt 0; prompt i uses seed + i (default 0)")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--guidance-scale", type=guidance_float, default=None, metavar="G",
                   help="classifier-free guidance scale (default: the pipeline's)")
    p.add_argument("--scheduler-shift", type=shift_float, default=None, metavar="S",
                   help="shift a flow-matching scheduler's sigmas by S, as SD3 (3) and FLUX do, so the noise level is "
                        "not linear in the step (default: the pipeline's schedule; the embedded model's is linear)")
    p.add_argument("--repeats", type=positive_int, default=1, metavar="N",
                   help="time each item this many times, keep the fastest (default 1)")
    p.add_argument("--extra-metrics", choices=("auto", "on", "off"), default="auto",
                   help="the learned metrics LPIPS, CLIP score and ImageReward (the learned-metrics extra): auto "
                        "adds each where its weights load and skips the rest quietly (-v says why), on warns for "
                        "each that does not load, off skips them (default auto)")
    p.add_argument("--threads", type=positive_int, default=None, metavar="N",
                   help="CPU threads per process (default: 1 for the embedded model, else all cores shared out)")
    add_verbose(p)
    p.set_defaults(handler=run)
    return p


# What `bench` needs beyond the base install (the `bench` extra), by import name.
BENCH_MODULES = ("accelerate", "matplotlib", "torchmetrics")


def _require_bench_extra() -> None:
    """One line naming what is missing, rather than an ImportError after the model has loaded."""
    import importlib.util

    missing = [name for name in BENCH_MODULES if importlib.util.find_spec(name) is None]
    if missing:
        raise CommandError(
            f"bench needs {', '.join(missing)} (the bench extra): pip install {' '.join(BENCH_MODULES)}, "
            'or pip install -e ".[bench]" in a checkout of spectrum-cache'
        )


def _options(args: argparse.Namespace) -> Any:
    """Validate the arguments into BenchOptions; every problem is a one-line usage error."""
    from ..loading import check_model, resolve_device
    from .methods import default_methods, parse_methods
    from .prompts import load_prompts
    from .runner import BenchOptions

    try:
        methods = default_methods(args.steps) if args.methods is None else parse_methods(args.methods, args.steps)
    except ValueError as error:
        raise usage_error(f"--methods: {error}") from None
    try:
        prompts = load_prompts(args.prompts)
    except (OSError, ValueError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
        raise usage_error(f"--prompts {args.prompts}: {reason}") from None
    if args.num_prompts is not None:
        prompts = prompts[: args.num_prompts]
    calibration: list[str] = []
    if args.calibration_prompts is not None:
        try:
            calibration = load_prompts(args.calibration_prompts)
        except (OSError, ValueError, UnicodeDecodeError) as error:
            reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
            raise usage_error(f"--calibration-prompts {args.calibration_prompts}: {reason}") from None
    if args.seed + len(prompts) - 1 > MAX_SEED:  # prompt i uses seed + i
        raise usage_error(f"--seed {args.seed}: with {len(prompts)} prompts the seeds would pass 2**64-1")
    check_model(args.model)
    if args.device is not None:
        resolve_device(args.device)
    if args.out.exists() and not args.out.is_dir():
        raise usage_error(f"--out {args.out} is a file, not a folder")
    from .runner import BenchError

    try:
        return BenchOptions(
            out=args.out, methods=tuple(methods), prompts=tuple(prompts), steps=args.steps, seed=args.seed,
            model=args.model, device=args.device, guidance_scale=args.guidance_scale, repeats=args.repeats,
            extra_metrics=args.extra_metrics, threads=args.threads, scheduler_shift=args.scheduler_shift,
            calibration_prompts=tuple(calibration),
        )
    except BenchError as error:
        raise usage_error(f"--calibration-prompts: {error}") from None


def run(args: argparse.Namespace) -> int:
    """Handler of ``spectrum-cache bench``; problems raise CommandError (one line, exit 2 for bad input)."""
    with exit_at_once_on_interrupt():  # start-up: see exit_at_once_on_interrupt
        _require_bench_extra()
        from .report import markdown_table
        from .runner import BenchError, run_bench

        options = _options(args)
    try:
        result = run_bench(options)
    except BenchError as error:
        raise usage_error(str(error)) from None
    if "rows" in result:  # the main process
        print(markdown_table(result["rows"]), end="")
        print(f"ran {result['ran']} items here, {result['skipped']} already done; results in {options.out}/ "
              f"(table.md, quality_vs_speedup.png, grid.png, records/)")
    return 0
