"""The ``spectrum-cache calibrate`` subcommand: plan a schedule for a model and write it as JSON.

    spectrum-cache calibrate --passes 10 --steps 50 --out schedule.json          # the embedded model
    spectrum-cache calibrate --model FOLDER --prompts calib.txt --passes 14 --steps 50 --guidance-scale 3.5 --out s.json
    spectrum-cache generate "a red circle" --schedule schedule.json

Part of the command line (cli.py registers it); nothing else imports it.
"""

from __future__ import annotations

import argparse
import logging
import math
from pathlib import Path
from typing import Any

from .errors import FAILURE, CommandError, exit_at_once_on_interrupt, usage_error
from .options import add_verbose, guidance_float, positive_int, seed_int
from .pipeline_options import add_model_options, call_options, check_call_options, check_size, pipeline_class

logger = logging.getLogger("spectrum_cache.cli")

# Calibration noise: prompt i uses seed + i; far from the bench's and generate's default seed 0, so the
# calibration and an evaluation never share noise by accident.
DEFAULT_SEED = 1_000_000


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``calibrate`` on the ``spectrum-cache`` command."""
    p = subparsers.add_parser(
        "calibrate",
        help="plan which steps run the network for a model (a schedule file for generate --schedule)",
        description="Run the full sampler on a few calibration prompts, plan the schedule of exactly --passes "
        "network passes whose Spectrum forecasts come closest to it (the paper's schedule is one of the "
        "candidates, so the result is never worse on these prompts), and write it with its provenance as JSON.",
    )
    p.add_argument("--model", default=None, metavar="ID_OR_FOLDER",
                   help="a diffusers pipeline id or folder (default: the embedded model)")
    p.add_argument("--passes", type=positive_int, required=True, metavar="K", help="network passes (compute steps)")
    p.add_argument("--steps", type=positive_int, required=True, metavar="N", help="denoising steps")
    p.add_argument("--guidance", type=guidance_float, default=None, dest="guidance", metavar="G",
                   help="deprecated spelling of --guidance-scale (the name generate and bench use)")
    p.add_argument("--prompts", type=Path, default=None, metavar="FILE",
                   help="calibration prompts, one per line (default for the embedded model: its bundled calibration "
                        "prompts, none of which is in the bench's list; required with --model)")
    p.add_argument("--num-prompts", type=positive_int, default=None, metavar="N",
                   help="use only the first N prompts (default: 4 of the embedded model's, all of a --prompts file)")
    add_model_options(p)  # --guidance-scale (the schedule is for this one), --negative-prompt, --num-frames, ...
    p.add_argument("--seed", type=seed_int, default=DEFAULT_SEED, metavar="N",
                   help=f"noise seed of calibration prompt 0; prompt i uses seed + i (default {DEFAULT_SEED})")
    p.add_argument("--out", type=Path, required=True, metavar="FILE", help="the schedule file to write (JSON)")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--threads", type=positive_int, default=None, metavar="N", help="CPU threads (default as generate)")
    add_verbose(p)
    p.set_defaults(handler=run)
    return p


def _prompts(args: argparse.Namespace) -> list[str]:
    from .bench.prompts import DEFAULT_CALIBRATION_PROMPTS, calibration_prompts, load_prompts

    if args.prompts is None:
        if args.model is not None:
            raise usage_error("--prompts FILE is required with --model: calibrate on a few prompts like the ones you "
                              "will generate, and evaluate on others")
        return calibration_prompts()[: args.num_prompts or DEFAULT_CALIBRATION_PROMPTS]
    try:
        prompts = load_prompts(args.prompts)
    except (OSError, ValueError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
        raise usage_error(f"--prompts {args.prompts}: {reason}") from None
    return prompts[: args.num_prompts] if args.num_prompts else prompts


def _check_out(out: Path) -> None:
    if out.is_dir():
        raise usage_error(f"--out {str(out)!r} is a folder; give a file name such as {out / 'schedule.json'}")
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise usage_error(f"--out {str(out)!r}: the folder {str(parent)!r} does not exist")


def _guidance(args: argparse.Namespace) -> None:
    """--guidance, the old spelling, becomes --guidance-scale with a warning."""
    if args.guidance is None:
        return
    if args.guidance_scale is not None:
        raise usage_error("--guidance is the deprecated spelling of --guidance-scale; give only --guidance-scale")
    logger.warning("--guidance is deprecated; use --guidance-scale, as generate and bench do")
    args.guidance_scale = args.guidance


def run(args: argparse.Namespace) -> int:
    """Handler of ``spectrum-cache calibrate``."""
    with exit_at_once_on_interrupt():
        # Every option first: nothing below may fail for bad input after loading.
        _guidance(args)
        if args.passes > args.steps:
            raise usage_error(f"--passes {args.passes}: at most --steps ({args.steps}) steps can run the network")
        _check_out(args.out)
        prompts = _prompts(args)
        from .loading import check_model, check_offload, cpu_threads, load_model, resolve_device, torch_dtype

        check_model(args.model)
        device = resolve_device(args.device)
        check_offload(args.offload, device, args.device)
        options = call_options(args)
        check_size(args.model, options)
        known_class = pipeline_class(args.model)
        if known_class is not None:
            check_call_options(known_class, options)
        import torch

        if torch.device(device).type == "cpu":
            torch.set_num_threads(cpu_threads(args.threads, args.model))
        pipe = load_model(args.model, device, torch_dtype(args.dtype, device, args.model), args.offload)
        if known_class is None:  # a hub id: its class is known now
            check_call_options(type(pipe), options)
        pipe.set_progress_bar_config(disable=True)

    from .integrations.calibrate import calibrate

    try:
        config = calibrate(pipe, prompts, passes=args.passes, num_inference_steps=args.steps, seed=args.seed, **options)
    except (ValueError, TypeError) as error:
        raise CommandError(str(error).strip().splitlines()[0], FAILURE, error) from None
    config.save(args.out)
    record = config.provenance
    assert record is not None  # calibrate writes the provenance
    paper = record.get("paper_mean_psnr")
    against = (f"; the paper's schedule {paper:.2f} dB" if paper is not None and math.isfinite(paper)
               else "" if paper is not None else "; no adaptive schedule has exactly that many passes")
    cost = record["cost"]
    print(f"calibrated {record['pipeline']}: {args.passes} of {args.steps} steps run the network: "
          f"{_schedule_text(config)}, blend weight {config.blend_weight:g}; mean PSNR {record['mean_psnr']:.2f} dB "
          f"against the full sampler on {len(prompts)} calibration prompts{against}. Cost: {cost['network_passes']} "
          f"network passes ({cost['network_passes'] / max(cost['full_run_passes'], 1) / len(prompts):.1f} full runs per "
          f"prompt), "
          f"{cost['seconds']:.0f} s. Wrote {args.out}")
    return 0


def _schedule_text(config: Any) -> str:
    """The schedule as printed: its steps, or each denoiser's over the steps it runs."""
    if not config.per_denoiser:
        return str(list(config.compute_steps))
    counts = config.denoiser_steps or {}
    return "; ".join(f"{name} {list(steps)}" + (f" of its {counts[name]} steps" if name in counts else "")
                     for name, steps in config.compute_steps.items())
