"""Which diffusers denoisers Spectrum supports, and what a forecast step skips in each.

    python benchmarks/denoiser_survey.py            # every class of tests/denoisers.py
    python benchmarks/denoiser_survey.py Wan Flux   # the classes whose name contains one of the words

Builds every class of tests/denoisers.py tiny (distinct widths, non-square latents) and runs it as a bare
denoiser for 12 steps: without Spectrum, with the every-step schedule, with the paper's schedule (warm-up 3,
alpha 0.75) and after disable_spectrum. A class works when the every-step run and the run after disable give
the baseline's latents bit for bit, and the paper's schedule runs the first block only on its compute steps
with finite, changed latents. Prints one line per class, then "N of M work". A refused class prints the
reason enable_spectrum gave, and whether SpectrumConfig(forecast_output=True) (forecasting the whole output)
works for it.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import denoisers  # noqa: E402  (tests/denoisers.py: the table of tiny builds)
from spectrum_cache import (  # noqa: E402
    SpectrumConfig, compute_steps, disable_spectrum, enable_spectrum, spectrum_summary,
)
from spectrum_cache.integrations import UnsupportedModelError  # noqa: E402
from spectrum_cache.integrations.adapters import resolve_adapter  # noqa: E402

STEPS = denoisers.STEPS
LAYERS = (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d)


def first_layer(block: torch.nn.Module) -> torch.nn.Module:
    return next(m for name, m in block.named_modules() if isinstance(m, LAYERS) and "emb" not in name)


def skipped(model: torch.nn.Module) -> str:
    """The block lists and stand-in modules of a forecast step, by path."""
    paths = {id(m): name for name, m in model.named_modules()}
    adapter = resolve_adapter(model)
    lists = [paths[id(m)] for m in adapter.block_lists]
    singles = [paths[id(m)] for m in adapter.stand_in_modules]
    text = f"blocks: {', '.join(lists) or '-'}"
    if singles:
        text += f"; stand-ins: {', '.join(singles)}"
    return text + "; head: " + " + ".join(paths[id(head)] for head in adapter.heads)


def runs(entry: denoisers.Denoiser, model, inputs, extra: dict) -> str | None:
    """None if the model works under ``extra`` (every-step, paper schedule, disable), else what failed."""
    counter = [0]
    handle = None
    if not extra.get("forecast_output"):
        handle = first_layer(resolve_adapter(model).blocks[0]).register_forward_hook(
            lambda *a: counter.__setitem__(0, counter[0] + 1))
    try:
        baseline = denoisers.denoise(entry, model, inputs)
        full, counter[0] = counter[0], 0
        enable_spectrum(model, SpectrumConfig(num_inference_steps=STEPS, warmup_steps=STEPS, **extra))
        if not torch.equal(denoisers.denoise(entry, model, inputs), baseline):
            return "the every-step schedule changed the latents"
        disable_spectrum(model)
        counter[0] = 0
        config = SpectrumConfig(num_inference_steps=STEPS, warmup_steps=3, flex_window=0.75, **extra)
        enable_spectrum(model, config)
        forecast = denoisers.denoise(entry, model, inputs)
        expected = compute_steps(config, STEPS)
        (branch,) = spectrum_summary(model).branches
        if not torch.isfinite(forecast).all() or torch.equal(forecast, baseline):
            return "the forecasts are not finite, or change nothing"
        if list(branch.computed_steps) != expected:
            return f"computed steps {branch.computed_steps}, planned {expected}"
        if handle is not None and counter[0] * STEPS != full * len(expected):
            return f"the first block ran {counter[0]} times, {full * len(expected) // STEPS} expected"
        disable_spectrum(model)
        if not torch.equal(denoisers.denoise(entry, model, inputs), baseline):
            return "disable_spectrum did not restore the latents"
        return None
    except Exception as error:  # noqa: BLE001 - the survey reports whatever breaks
        return f"{type(error).__name__}: {str(error).splitlines()[0][:160]}"
    finally:
        if handle is not None:
            handle.remove()
        disable_spectrum(model)


def survey(entry: denoisers.Denoiser) -> tuple[bool, str]:
    model, inputs = denoisers.build(entry)
    try:
        enable_spectrum(model, SpectrumConfig(num_inference_steps=STEPS))
    except UnsupportedModelError as error:
        alternative = runs(entry, model, inputs, {"forecast_output": True})
        note = "forecast_output=True works" if alternative is None else f"forecast_output=True fails: {alternative}"
        return False, f"refused: {error}; {note}"
    disable_spectrum(model)
    failure = runs(entry, model, inputs, {})
    return failure is None, skipped(model) if failure is None else failure


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("words", nargs="*", help="only the classes whose name contains one of these")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # tiny models: one thread is the fastest
    warnings.simplefilter("ignore")
    entries = [e for e in denoisers.DENOISERS
               if not args.words or any(w.lower() in e.cls.lower() for w in args.words)]
    working = 0
    start = time.perf_counter()
    for entry in entries:
        works, text = survey(entry)
        working += works
        print(f"{entry.cls:40s} {'yes' if works else 'no ':3s}  {text}", flush=True)
    print(f"{working} of {len(entries)} work ({time.perf_counter() - start:.0f} s; not denoisers, left out: "
          f"{', '.join(denoisers.NOT_DENOISERS)})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
