"""The ``spectrum-cache`` command: ``generate`` an image with Spectrum, or ``bench`` it against others.

Exit codes: 0 success, 2 usage error, 1 failure, 130 interrupted. Errors print one line, no traceback.
Every option is checked before a model loads.

This module sits on top: it imports bench/, loading.py and errors.py, and nothing imports it.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, NoReturn

from .errors import (FAILURE, INTERRUPTED, USAGE_ERROR, CommandError, exit_at_once_on_interrupt, first_line,
                     usage_error)
from .options import add_verbose, finite_float, guidance_float, positive_int, seed_int
from .pipeline_options import add_model_options, call_options, check_call_options, check_size, pipeline_class

# The embedded model draws tiny images; written this many times larger so a person can see them.
EMBEDDED_UPSCALE = 8
# Image types named in messages about --out (any type Pillow can write is accepted).
COMMON_IMAGE_TYPES = ".png, .jpg, .webp"
# The package's loggers (spectrum_cache.*) are shown on stderr while the command runs.
PACKAGE_LOGGER = "spectrum_cache"
# Named, not __name__: under `python -m spectrum_cache.cli` this module is __main__.
logger = logging.getLogger("spectrum_cache.cli")


class _Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors, and a help epilog built only when help is shown (the
    embedded model's word list costs an import that every other command would pay for)."""

    def __init__(self, *args: Any, epilog_factory: Callable[[], str] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._epilog_factory = epilog_factory

    def format_help(self) -> str:
        if self._epilog_factory is not None:
            self.epilog = self._epilog_factory()
        return super().format_help()

    def error(self, message: str) -> NoReturn:
        self.exit(USAGE_ERROR, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("spectrum-cache")
    except PackageNotFoundError:  # run from a source tree that was never installed
        from . import __version__

        return __version__


def _embedded_words_epilog() -> str:
    # Both from the embedded model's own data, so they follow it when it is retrained.
    from .bench.prompts import bundled_prompts
    from .embedded.data import vocabulary

    return (
        f"The embedded model (the default, without --model) was trained on captions like \"{bundled_prompts()[0]}\" "
        f"and knows only these words: {', '.join(vocabulary())}. Other words are ignored (with a warning)."
    )


def _add_generate(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "generate",
        help="generate an image with Spectrum (the embedded model by default)",
        description="Generate with Spectrum on. Without --model, runs the small model shipped in the package.",
        epilog_factory=_embedded_words_epilog,
    )
    p.add_argument("prompt", help='e.g. "a red circle and a green square" (the embedded model draws the colours)')
    p.add_argument("--speedup", type=finite_float, default=None, metavar="X",
                   help="target ideal speedup N/passes, e.g. 4 (default: the paper's alpha=0.75 schedule)")
    p.add_argument("--schedule", type=Path, default=None, metavar="FILE",
                   help="a schedule file from `spectrum-cache calibrate` (its steps, blend weight and step count)")
    p.add_argument("--steps", type=positive_int, default=None, metavar="N",
                   help="denoising steps (default 50, or the --schedule file's)")
    p.add_argument("--seed", type=seed_int, default=0, metavar="N", help="random seed, 0 to 2**64-1 (default 0)")
    p.add_argument("--out", type=Path, default=Path("spectrum.png"), metavar="FILE",
                   help="output image, any type Pillow writes (default spectrum.png); folders on its path that do "
                        "not exist are created; with --compare also FILE-full and FILE-compare beside it")
    p.add_argument("--no-spectrum", action="store_true", help="run the full sampler only")
    p.add_argument("--compare", action="store_true",
                   help="also run the full sampler with the same seed and write it, and both side by side with PSNR "
                        "and speedup")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--threads", type=positive_int, default=None, metavar="N",
                   help="CPU threads (default: 1 for the embedded model, whose steps are too small to share out; "
                        "torch's default otherwise)")
    p.add_argument("--model", default=None, metavar="ID_OR_FOLDER",
                   help="a diffusers pipeline id or folder (e.g. black-forest-labs/FLUX.1-dev) instead of the embedded model")
    add_model_options(p)
    p.add_argument("--true-cfg-scale", type=guidance_float, default=None, metavar="G",
                   help="FLUX.1's true classifier-free guidance with --negative-prompt (pipelines that take "
                        "true_cfg_scale)")
    add_verbose(p)
    p.set_defaults(handler=_generate)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="spectrum-cache",
        description="Spectrum: training-free Chebyshev feature forecasting that makes diffusion sampling faster.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    subparsers = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _add_generate(subparsers)
    from .bench import cli as bench_cli

    bench_cli.add_parser(subparsers)
    from . import cli_calibrate

    cli_calibrate.add_parser(subparsers)
    return parser


class _LogFormat(logging.Formatter):
    """One line in the command's own style: ``spectrum-cache: warning: ...``."""

    def format(self, record: logging.LogRecord) -> str:
        return f"spectrum-cache: {record.levelname.lower()}: {record.getMessage()}"


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: Any = None, line: str | None = None) -> None:
    """Python warnings (SpectrumWarning, a schedule calibrated on another model, other libraries') in the
    command's one-line style; other libraries' say whose they are, as the source line would have."""
    text = " ".join(str(message).split())
    origin = category.__module__.split(".")[0]
    if origin == "builtins":  # UserWarning and the like: the package of the file that warned
        parts = Path(filename).parts
        origin = parts[parts.index("site-packages") + 1] if "site-packages" in parts[:-1] else Path(filename).stem
    if origin != PACKAGE_LOGGER:
        text = f"{text} ({category.__name__} from {origin})"
    print(f"spectrum-cache: warning: {text}", file=sys.stderr if file is None else file)


@contextlib.contextmanager
def _console_log(verbose: bool) -> Iterator[None]:
    """Show the package's log on stderr for the command's duration (the library itself only logs)."""
    package_logger = logging.getLogger(PACKAGE_LOGGER)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_LogFormat())
    saved_level = package_logger.level
    package_logger.addHandler(handler)
    package_logger.setLevel(logging.INFO if verbose else logging.WARNING)
    saved_showwarning = warnings.showwarning
    warnings.showwarning = _show_warning
    try:
        if not verbose:
            yield
            return
        # Only here: importing diffusers costs seconds, which a one-line usage error must not pay.
        from diffusers.utils import logging as diffusers_logging

        saved_diffusers = diffusers_logging.get_verbosity()
        diffusers_logging.set_verbosity_info()
        try:
            yield
        finally:
            diffusers_logging.set_verbosity(saved_diffusers)
    finally:
        warnings.showwarning = saved_showwarning
        package_logger.removeHandler(handler)
        package_logger.setLevel(saved_level)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; returns the exit status."""
    args: argparse.Namespace | None = None
    try:
        try:
            with exit_at_once_on_interrupt():
                args = build_parser().parse_args(argv)
        except SystemExit as exit_request:  # --help, --version, or a usage error argparse printed
            return exit_request.code if isinstance(exit_request.code, int) else USAGE_ERROR
        with _console_log(args.verbose):
            return args.handler(args) or 0
    except CommandError as error:
        if getattr(args, "traceback", False) and error.cause is not None:
            import traceback

            traceback.print_exception(error.cause, file=sys.stderr)
        print(f"spectrum-cache: error: {error}", file=sys.stderr)
        return error.code
    except KeyboardInterrupt:
        print("spectrum-cache: interrupted", file=sys.stderr)
        return INTERRUPTED


# -- generate: checks ---------------------------------------------------------------------------------
def compare_paths(out: Path) -> tuple[Path, Path]:
    """Where --compare writes the full sampler's image and the side-by-side picture."""
    return out.with_name(f"{out.stem}-full{out.suffix}"), out.with_name(f"{out.stem}-compare{out.suffix}")


def _check_out(out: Path, extra: Sequence[Path] = ()) -> None:
    """Everything about --out that would otherwise fail only after sampling: the image type, a folder
    in the way, a file where a folder should be, a place that cannot be written."""
    import tempfile

    from PIL import Image

    for path in (out, *extra):
        if path.is_dir():
            raise usage_error(f"--out {str(out)!r}: {str(path)!r} is a folder; give a file name such as {path / 'spectrum.png'}")
    Image.init()
    suffix = out.suffix.lower()
    if not suffix:
        raise usage_error(f"--out {str(out)!r} has no file extension; use an image type such as {COMMON_IMAGE_TYPES}")
    image_format = Image.registered_extensions().get(suffix)
    if image_format is None or image_format not in Image.SAVE:
        raise usage_error(f"--out {str(out)!r}: Pillow cannot write {suffix} files; use an image type such as {COMMON_IMAGE_TYPES}")
    for path in (out, *extra):
        if path.exists() and not os.access(path, os.W_OK):
            raise usage_error(f"--out {str(out)!r}: {str(path)!r} exists and cannot be overwritten (read-only)")
    existing = out.parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise usage_error(f"--out {str(out)!r}: {str(existing)!r} is a file, not a folder")
    try:  # a real write: permissions, read-only file systems and /proc-like places all show here
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as error:
        raise usage_error(f"--out {str(out)!r}: cannot write in {str(existing)!r} ({error.strerror or error})") from None


def _schedule_config(path: Path, speedup: float | None, steps: int | None) -> Any:
    """The config of a --schedule file; --speedup cannot go with it, --steps must be its step count."""
    from .config import SpectrumConfig

    if speedup is not None:
        raise usage_error("--speedup and --schedule both choose the steps that run; give one of them")
    try:
        config = SpectrumConfig.load(path)
    except OSError as error:
        raise usage_error(f"--schedule {path}: {error.strerror or error}") from None
    except ValueError as error:
        raise usage_error(f"--schedule: {error}") from None
    if config.compute_steps is None:
        return config.replace(num_inference_steps=None) if steps is not None else config
    if steps is not None and steps != config.num_inference_steps:
        raise usage_error(f"--steps {steps}: the schedule in {path} was calibrated for {config.num_inference_steps} "
                          "steps; drop --steps or calibrate again for this step count")
    return config


def _config(speedup: float | None, steps: int) -> Any:
    from .config import SpectrumConfig

    if speedup is None:
        config = SpectrumConfig()
    else:
        try:
            config = SpectrumConfig.for_speedup(speedup, steps)
        except ValueError as error:
            raise usage_error(_speedup_advice(speedup, steps) or f"--speedup: {error}") from None
    # The pipeline supplies the step count at run time (the warm-up run uses fewer steps).
    return config.replace(num_inference_steps=None)


def _speedup_advice(speedup: float, steps: int) -> str | None:
    """Why --speedup is out of reach at --steps, with fixes the command line offers (the library's own
    message suggests config fields, such as warmup_steps, that no option sets); None if it is not out of reach."""
    from .config import SpectrumConfig
    from .schedule import adaptive_schedule

    warmup = SpectrumConfig().warmup_steps

    def fewest_passes(n: int) -> int:  # the sparsest adaptive schedule: window 2, growing by n per pass
        return len(adaptive_schedule(n, warmup, 2, n))

    passes = fewest_passes(steps)
    if not steps / passes < speedup:
        return None
    more = next((n for n in range(steps + 1, 10_000) if n / fewest_passes(n) >= speedup), None)
    planned = max(1, math.floor(steps / speedup))
    fixes = ([f"use --steps {more} or more"] if more is not None else []) + [
        f"plan a schedule of {planned} pass{'es' if planned > 1 else ''} with `spectrum-cache calibrate --steps "
        f"{steps} --passes {planned} --out FILE` and pass it as --schedule FILE"]
    return (f"--speedup {speedup:g}: at --steps {steps} the sparsest schedule still runs the network on {passes} of "
            f"{steps} steps (the first {min(warmup, steps)} always run), so the highest speedup is "
            f"{steps / passes:.2f}x; {', or '.join(fixes)}")


def _warn_unknown_words(pipe: Any, prompt: str) -> None:
    """The embedded model maps words it never saw to [UNK] and draws blobs: say so in one line."""
    vocab = pipe.tokenizer.get_vocab()
    unknown = list(dict.fromkeys(w for w in pipe.tokenizer.tokenize(prompt) if w not in vocab))
    if unknown:
        known = [w for w in vocab if not (w.startswith("[") and w.endswith("]"))]  # leave out [PAD], [UNK], ...
        logger.warning(f"the embedded model does not know {', '.join(map(repr, unknown))} and ignores it; "
                       f"it knows: {', '.join(known)}")


# -- generate: running --------------------------------------------------------------------------------
WARMUP_STEPS = 2
DEFAULT_STEPS = 50


def _sample(pipe: Any, prompt: str, steps: int, seed: int, device: str, options: dict[str, Any],
            label: str) -> tuple[Any, float]:
    """(first image or frames, seconds); ``label`` names the run's progress bar."""
    import torch

    generator = torch.Generator(device="cpu").manual_seed(seed)
    pipe.set_progress_bar_config(desc=label)
    start = time.perf_counter()
    try:
        out = pipe(prompt, generator=generator, num_inference_steps=steps, **options)
    except ValueError as error:  # the pipeline's own input checks (e.g. a height it cannot draw)
        raise usage_error(f"{type(pipe).__name__} refused the options: {first_line(error)}", cause=error) from None
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


def _enlarge(frame: Any, upscale: int) -> Any:
    from PIL import Image

    return frame if upscale == 1 else frame.resize((frame.width * upscale, frame.height * upscale),
                                                   Image.Resampling.NEAREST)


def _save(frames: list[Any], path: Path, upscale: int) -> Path:
    """Write one image, or an animation for video frames (as a GIF beside ``path`` where its type
    holds one image only); returns the path written."""
    from PIL import Image

    frames = [_enlarge(f, upscale) for f in frames]
    path.parent.mkdir(parents=True, exist_ok=True)
    if len(frames) == 1:
        frames[0].save(path)
        return path
    if Image.registered_extensions().get(path.suffix.lower()) not in Image.SAVE_ALL:
        path = path.with_suffix(".gif")
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    return path


def side_by_side(full: Any, spectrum: Any, full_label: str, spectrum_label: str, caption: str) -> Any:
    """The full sampler's image left, Spectrum's right, each labelled above, the caption centred under
    both (it is about the pair, not one column). Images too small for their labels (a 64x64 output) are
    enlarged by a whole factor, nearest neighbour, so titles do not overlap and the caption fits."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(size=15)
    gap, pad, line = 12, 8, 22
    column = max(font.getlength(full_label), font.getlength(spectrum_label)) + gap
    needed = max(column / min(full.width, spectrum.width), (font.getlength(caption) - gap) / (full.width + spectrum.width))
    scale = max(1, math.ceil(needed))
    full, spectrum = _enlarge(full, scale), _enlarge(spectrum, scale)
    width = full.width + gap + spectrum.width
    height = pad + line + max(full.height, spectrum.height) + pad + line + pad
    canvas = Image.new("RGB", (width + 2 * pad, height), "white")
    draw = ImageDraw.Draw(canvas)
    for x, image, label in ((pad, full, full_label), (pad + full.width + gap, spectrum, spectrum_label)):
        canvas.paste(image, (x, pad + line))
        draw.text((x + image.width / 2, pad + line / 2), label, fill="black", font=font, anchor="mm")
    draw.text((pad + width / 2, height - pad - line / 2), caption, fill="black", font=font, anchor="mm")
    return canvas


def _generate(args: argparse.Namespace) -> int:
    from .loading import (busy_note, check_model, check_offload, cpu_threads, is_embedded, load_model, resolve_device,
                          torch_dtype)

    # Start-up (checks, imports, loading) ends at once on Ctrl-C; see exit_at_once_on_interrupt.
    with exit_at_once_on_interrupt():
        # Every option first: nothing below may fail for bad input after minutes of loading and sampling.
        if args.no_spectrum and args.compare:
            raise usage_error("--compare needs Spectrum on; drop --no-spectrum")
        _check_out(args.out, compare_paths(args.out) if args.compare else ())
        check_model(args.model)
        if args.schedule is not None:
            config = _schedule_config(args.schedule, args.speedup, args.steps)
            args.steps = args.steps or config.num_inference_steps or DEFAULT_STEPS
        else:
            args.steps = args.steps or DEFAULT_STEPS
            config = _config(args.speedup, args.steps)
        device = resolve_device(args.device)
        check_offload(args.offload, device, args.device)
        embedded = is_embedded(args.model)
        options = call_options(args)
        check_size(args.model, options)
        known_class = pipeline_class(args.model)
        if known_class is not None:
            check_call_options(known_class, options)

        import torch

        threads = cpu_threads(args.threads, args.model)
        on_cpu = torch.device(device).type == "cpu"
        if on_cpu:
            torch.set_num_threads(threads)
        where = f"on {device}" + (f" ({threads} thread{'s' if threads > 1 else ''})" if torch.device(device).type == "cpu" else "")
        if args.offload:
            where += f" with {args.offload} offload"

        pipe = load_model(args.model, device, torch_dtype(args.dtype, device, args.model), args.offload)
        if known_class is None:  # a hub id: its class is known now
            check_call_options(type(pipe), options)
        if embedded:
            _warn_unknown_words(pipe, args.prompt)
            if args.negative_prompt:
                _warn_unknown_words(pipe, args.negative_prompt)
        upscale = EMBEDDED_UPSCALE if args.model is None else 1  # --model images are written at their own size

    def sample(steps: int, label: str) -> tuple[Any, float]:
        return _sample(pipe, args.prompt, steps, args.seed, device, options, label)

    def busy(threads: int) -> str:  # on a CPU, a timing says when other work took the cores it needed
        return busy_note(threads) if on_cpu else ""

    if args.no_spectrum:
        result, seconds = sample(args.steps, "full sampler")
        written = _save(_to_pil_frames(result), args.out, upscale)
        print(f"full sampler: {args.steps} steps computed in {seconds:.2f} s {where}{busy(threads)}; wrote {written}")
        return 0

    from .integrations import disable_spectrum, enable_spectrum, spectrum_summary

    planned = config.compute_steps is not None
    if args.compare and planned:  # a schedule runs only its own step count: warm up before it is on
        sample(WARMUP_STEPS, f"warm-up ({WARMUP_STEPS} steps, untimed)")
    try:
        enable_spectrum(pipe, config)
    except ValueError as error:
        raise CommandError(str(error), FAILURE, error) from None
    if args.compare and not planned:  # one short warm-up run, so neither timed run pays first-call costs
        sample(WARMUP_STEPS, f"warm-up ({WARMUP_STEPS} steps, untimed)")
    result, seconds = sample(args.steps, "Spectrum")
    branch = spectrum_summary(pipe).branches[0]
    passes = len(branch.computed_steps)
    frames = _to_pil_frames(result)
    print(
        f"Spectrum: {passes} of {args.steps} steps computed, {len(branch.forecast_steps)} forecast "
        f"(ideal speedup {branch.ideal_speedup:.2f}x) in {seconds:.2f} s {where}{busy(threads)}"
    )
    paths_written = [_save(frames, args.out, upscale)]
    if args.compare:
        from .bench.metrics import psnr as image_psnr
        from .bench.metrics import to_nchw

        disable_spectrum(pipe)
        full_result, full_seconds = sample(args.steps, "full sampler")
        full_frames = _to_pil_frames(full_result)
        psnr = image_psnr(to_nchw(frames[0]), to_nchw(full_frames[0]))
        speedup = full_seconds / seconds
        # Identical images (e.g. --steps 1, nothing forecast) have no finite PSNR: say what it means.
        quality = f"PSNR {psnr:.2f} dB" if math.isfinite(psnr) else "images identical"
        print(f"full sampler: {args.steps} steps in {full_seconds:.2f} s; measured speedup {speedup:.2f}x, {quality}"
              f"{busy(threads)}")
        full_path, pair_path = compare_paths(args.out)
        paths_written.append(_save(full_frames, full_path, upscale))
        # A video's comparison is an animation of both, frame by frame (a GIF where the type holds one image).
        pairs = [side_by_side(_enlarge(f, upscale), _enlarge(s, upscale), f"full sampler ({args.steps} passes)",
                              f"Spectrum ({passes} of {args.steps} passes)", f"{quality}, measured speedup {speedup:.2f}x")
                 for f, s in zip(full_frames, frames)]
        paths_written.append(_save(pairs, pair_path, 1))
    print(f"wrote {', '.join(map(str, paths_written))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
