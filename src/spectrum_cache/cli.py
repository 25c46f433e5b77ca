"""The ``spectrum-cache`` command: ``generate`` an image with Spectrum, or ``bench`` it against others.

Exit codes: 0 success, 2 usage error, 1 failure. User errors print one line, no traceback.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

USAGE_ERROR = 2
FAILURE = 1
# The embedded model draws 32x32 images; written this many times larger so a person can see them.
EMBEDDED_UPSCALE = 8


class CommandError(Exception):
    """A failure to report in one line; ``code`` is the exit status."""

    def __init__(self, message: str, code: int = FAILURE) -> None:
        super().__init__(message)
        self.code = code


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text}")
    return value


def _add_generate(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "generate",
        help="generate an image with Spectrum (the embedded model by default)",
        description="Generate with Spectrum on. Without --model, runs the small model shipped in the package.",
    )
    p.add_argument("prompt", help='e.g. "a red circle on the left and a blue square on the right"')
    p.add_argument("--speedup", type=float, default=None,
                   help="target ideal speedup N/passes, e.g. 4 (default: the paper's alpha=0.75 schedule)")
    p.add_argument("--steps", type=_positive_int, default=50, help="denoising steps (default 50)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--out", type=Path, default=Path("spectrum.png"), help="output image (default spectrum.png)")
    p.add_argument("--no-spectrum", action="store_true", help="run the full sampler only")
    p.add_argument("--compare", action="store_true",
                   help="also run the full sampler with the same seed and write both side by side with PSNR and speedup")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--model", default=None,
                   help="a diffusers pipeline id or folder (e.g. black-forest-labs/FLUX.1-dev) instead of the embedded model")
    p.add_argument("--guidance-scale", type=float, default=None, help="classifier-free guidance scale (pipeline default)")
    p.set_defaults(handler=_generate)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spectrum-cache",
        description="Spectrum: training-free Chebyshev feature forecasting that makes diffusion sampling faster.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True)
    _add_generate(subparsers)
    from .bench import cli as bench_cli

    bench_cli.add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args) or 0
    except CommandError as error:
        print(f"spectrum-cache: error: {error}", file=sys.stderr)
        return error.code
    except KeyboardInterrupt:
        print("spectrum-cache: interrupted", file=sys.stderr)
        return FAILURE


# -- generate ---------------------------------------------------------------------------------------
def _device(name: str | None) -> str:
    import torch

    if name is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        torch.empty(0, device=name)
    except (RuntimeError, AssertionError) as error:
        raise CommandError(f"--device {name!r} is not usable here ({str(error).splitlines()[0]})", USAGE_ERROR) from None
    return name


def _config(speedup: float | None, steps: int) -> Any:
    from .config import SpectrumConfig

    try:
        config = SpectrumConfig() if speedup is None else SpectrumConfig.for_speedup(speedup, steps)
    except ValueError as error:
        raise CommandError(f"--speedup: {error}", USAGE_ERROR) from None
    # The pipeline supplies the step count at run time (the warm-up run uses fewer steps).
    return config.replace(num_inference_steps=None)


def load_model(model: str | None, device: str) -> Any:
    """The embedded pipeline, or any diffusers pipeline by id or folder; one-line error if not loadable.

    A folder holding an EmbeddedPipeline (e.g. one retrained with ``spectrum_cache.embedded.train``)
    loads through our own class, which diffusers cannot look up by name.
    """
    import torch

    from .embedded import EmbeddedPipeline, load_pipeline

    if model is None:
        return load_pipeline(device=device)
    from diffusers import DiffusionPipeline

    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    try:
        if _pipeline_class_name(model) == EmbeddedPipeline.__name__:
            return load_pipeline(device=device, weights=model)
        pipe = DiffusionPipeline.from_pretrained(model, dtype=dtype)
    except Exception as error:  # hub, network, format: all are "cannot load" to the user
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise CommandError(f"cannot load --model {model!r}: {first_line}") from None
    return pipe.to(device)


def _pipeline_class_name(model: str) -> str | None:
    index = Path(model) / "model_index.json"
    if not index.is_file():
        return None
    import json

    return json.loads(index.read_text()).get("_class_name")


def _sample(pipe: Any, prompt: str, steps: int, seed: int, device: str, guidance_scale: float | None) -> tuple[Any, float]:
    """(first image or frames, seconds)."""
    import torch

    kwargs: dict[str, Any] = {"num_inference_steps": steps}
    if guidance_scale is not None:
        kwargs["guidance_scale"] = guidance_scale
    generator = torch.Generator(device="cpu").manual_seed(seed)
    start = time.perf_counter()
    out = pipe(prompt, generator=generator, **kwargs)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    result = out.images[0] if hasattr(out, "images") else out.frames[0]
    return result, seconds


def _to_pil_frames(result: Any) -> list[Any]:
    import numpy as np
    from PIL import Image

    from .bench.metrics import to_uint8

    if isinstance(result, Image.Image):
        return [result]
    if isinstance(result, list):
        return [f if isinstance(f, Image.Image) else Image.fromarray(to_uint8(np.asarray(f))) for f in result]
    array = np.asarray(result)
    return [Image.fromarray(to_uint8(frame)) for frame in (array if array.ndim == 4 else [array])]


def _save(frames: list[Any], path: Path, upscale: int) -> None:
    from PIL import Image

    if upscale > 1:
        frames = [f.resize((f.width * upscale, f.height * upscale), Image.NEAREST) for f in frames]
    path.parent.mkdir(parents=True, exist_ok=True)
    if len(frames) == 1:
        frames[0].save(path)
    else:
        frames[0].save(path.with_suffix(".gif"), save_all=True, append_images=frames[1:], duration=100, loop=0)


def _side_by_side(left: Any, right: Any, title: str) -> Any:
    from PIL import Image, ImageDraw

    gap, banner = 8, 40
    canvas = Image.new("RGB", (left.width + right.width + gap, max(left.height, right.height) + banner), "white")
    canvas.paste(right, (0, banner))
    canvas.paste(left, (right.width + gap, banner))
    draw = ImageDraw.Draw(canvas)
    draw.text((4, 4), "full sampler", fill="black")
    draw.text((right.width + gap + 4, 4), "Spectrum", fill="black")
    draw.text((4, 22), title, fill="black")
    return canvas


def _generate(args: argparse.Namespace) -> int:
    from .integrations import disable_spectrum, enable_spectrum, spectrum_summary

    device = _device(args.device)
    config = _config(args.speedup, args.steps)
    if args.no_spectrum and args.compare:
        raise CommandError("--compare needs Spectrum on; drop --no-spectrum", USAGE_ERROR)
    pipe = load_model(args.model, device)
    upscale = EMBEDDED_UPSCALE if args.model is None else 1

    if args.no_spectrum:
        result, seconds = _sample(pipe, args.prompt, args.steps, args.seed, device, args.guidance_scale)
        _save(_to_pil_frames(result), args.out, upscale)
        print(f"full sampler: {args.steps} steps computed in {seconds:.2f} s; wrote {args.out}")
        return 0

    try:
        enable_spectrum(pipe, config)
    except ValueError as error:
        raise CommandError(str(error)) from None
    if args.compare:  # one short warm-up run, so neither timed run pays first-call costs
        _sample(pipe, args.prompt, 2, args.seed, device, args.guidance_scale)
    result, seconds = _sample(pipe, args.prompt, args.steps, args.seed, device, args.guidance_scale)
    summary = spectrum_summary(pipe)
    branch = summary.branches[0]
    frames = _to_pil_frames(result)
    print(
        f"Spectrum: {len(branch.computed_steps)} of {args.steps} steps computed, {len(branch.forecast_steps)} forecast "
        f"(ideal speedup {branch.ideal_speedup:.2f}x) in {seconds:.2f} s"
    )
    if not args.compare:
        _save(frames, args.out, upscale)
        print(f"wrote {args.out}")
        return 0

    from .bench.metrics import psnr as image_psnr
    from .bench.metrics import to_nchw

    disable_spectrum(pipe)
    full_result, full_seconds = _sample(pipe, args.prompt, args.steps, args.seed, device, args.guidance_scale)
    full_frames = _to_pil_frames(full_result)
    psnr = image_psnr(to_nchw(frames[0]), to_nchw(full_frames[0]))
    speedup = full_seconds / seconds
    print(f"full sampler: {args.steps} steps in {full_seconds:.2f} s; measured speedup {speedup:.2f}x, PSNR {psnr:.2f} dB")
    from PIL import Image

    big = [f.resize((f.width * upscale, f.height * upscale), Image.NEAREST) for f in (frames[0], full_frames[0])]
    title = f"PSNR {psnr:.2f} dB   speedup {speedup:.2f}x ({len(branch.computed_steps)}/{args.steps} passes)"
    _save([_side_by_side(big[0], big[1], title)], args.out, 1)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    # `python -m spectrum_cache.cli` (as torchrun starts it) runs this file as __main__, a second copy
    # of the module: dispatch to the package's copy so its CommandError is the one raised and caught.
    from spectrum_cache.cli import main as package_main

    sys.exit(package_main())
