"""The forecaster's memory options against today's full fit: bytes per feature element and quality on the test bed.

    python benchmarks/forecaster_options.py                      # 16 bundled prompts, guidance 4 and 1, alpha 0.75 and 3.0
    python benchmarks/forecaster_options.py --num-prompts 4 --json results/forecaster_options.json

Options (each a forecaster on the same schedule, blend weight 0.5, degree 4, lambda 0.1):

- ``full fp32``: the full fit with float32 moments X^T H and the last two features (the default before issue 28,
  ``SpectrumConfig(history=None)``); the reference of the "vs full fit" column.
- ``full fp16`` / ``full bf16``: the same fit with the moments kept in float16 / bfloat16 (summed in float32,
  rounded once per record).
- ``full fp16 + comp`` / ``full bf16 + comp``: the same with Kahan-compensated moments (a second 16-bit tensor
  holds what each rounding lost).
- ``history 4``, ``history 3``: the fit to the last K recorded features, kept in their own dtype
  (``SpectrumConfig(history=K)``).
- ``history 4, state cpu``: the same window in host memory (``state_device="cpu"``: on this CPU model, the copy
  path without a device), so it must equal ``history 4`` exactly.

The low-precision moments are defined in this script only (they are measured, not shipped). Bytes per element
are ``forecaster.nbytes / numel`` after 14 records of a 512 x 3072 feature (FLUX.1-dev's width), in
bfloat16 and in float32, and the device bytes with the state in host memory. Quality: the embedded test bed,
50 Euler steps, seed i for bundled prompt i, uint8 images as the bench makes them; PSNR against the full
50-step sampler ("vs full sampler", mean over prompts) and against the full fit's image at the same passes
("vs full fit": how far the option moves the output). One thread (the machine is shared).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Callable

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "src"))

from spectrum_cache import SpectrumConfig, SpectrumForecaster, disable_spectrum, enable_spectrum  # noqa: E402
from spectrum_cache.forecast import WindowedSpectrumForecaster, chebyshev_basis  # noqa: E402


class LowPrecisionMoments(SpectrumForecaster):
    """The full fit with X^T H kept in a 16-bit dtype, optionally Kahan-compensated (measured here, not shipped)."""

    def __init__(self, moment_dtype: torch.dtype, compensated: bool, **kwargs) -> None:
        self.moment_dtype, self.compensated = moment_dtype, compensated
        super().__init__(**kwargs)

    def _clear(self) -> None:
        super()._clear()
        self._lost: torch.Tensor | None = None  # Kahan: minus what the last rounding of each moment lost

    def _tensors(self) -> list[torch.Tensor | None]:
        return [*super()._tensors(), self._lost]

    def _record(self, step: int, feature: torch.Tensor) -> None:
        basis = chebyshev_basis(self.tau(step), self.degree)
        flat = feature.reshape(-1).float()
        if self._moments is None:
            self._moments = torch.zeros(self.degree + 1, flat.numel(), dtype=self.moment_dtype)
            if self.compensated:
                self._lost = torch.zeros_like(self._moments)
        row = torch.tensor(basis, dtype=torch.float64)
        self._gram += torch.outer(row, row)
        for m, t_m in enumerate(basis):
            term = flat * t_m
            old = self._moments[m].float()
            if self.compensated:
                y = term - self._lost[m].float()
                total = (old + y).to(self.moment_dtype)
                self._lost[m] = ((total.float() - old) - y).to(self.moment_dtype)
                self._moments[m] = total
            else:
                self._moments[m] = (old + term).to(self.moment_dtype)
        self._prev, self._prev_step = self._last, self._last_step
        self._last = feature.clone()

    def _forecast(self, step: int) -> torch.Tensor:
        on_last, on_prev = self._linear_coefficients(step, self._prev_step if self._prev is not None else None)
        out = self._last.reshape(-1).float() * on_last
        weights = self._spectral_weights(step, self.blend_weight, torch.device("cpu")).tolist()
        for m, weight in enumerate(weights):
            moment = self._moments[m].float()
            if self.compensated:
                moment -= self._lost[m].float()
            out.add_(moment, alpha=weight)
        if on_prev:
            out.add_(self._prev.reshape(-1), alpha=on_prev)
        return out.reshape(self._last.shape).to(self._last.dtype)


# name -> (config fields, a forecaster factory replacing make_forecaster's, or None)
def _low(dtype: torch.dtype, compensated: bool) -> Callable:
    def factory(kind, steps, degree, ridge_lambda, blend_weight, time_points, history=None, state_device=None):
        return LowPrecisionMoments(dtype, compensated, degree=degree, ridge_lambda=ridge_lambda,
                                   blend_weight=blend_weight, num_inference_steps=steps, time_points=time_points)
    return factory


OPTIONS: dict[str, tuple[dict, Callable | None]] = {
    "full fp32": ({"history": None}, None),
    "full fp16": ({"history": None}, _low(torch.float16, False)),
    "full bf16": ({"history": None}, _low(torch.bfloat16, False)),
    "full fp16 + comp": ({"history": None}, _low(torch.float16, True)),
    "full bf16 + comp": ({"history": None}, _low(torch.bfloat16, True)),
    # history 4 and 3 at degree 4 (issue 28's rows) are refused since issue 32: fewer points than coefficients.
    "history 5": ({"history": 5}, None),
    "history 5, state cpu": ({"history": 5, "state_device": "cpu"}, None),
    "history 3, degree 2": ({"history": 3, "degree": 2}, None),
    "full fp32, state cpu": ({"history": None, "state_device": "cpu"}, None),
}


def forecaster_of(name: str, steps: int = 50) -> object:
    fields, factory = OPTIONS[name]
    if factory is not None:
        return factory("chebyshev", steps, 4, 0.1, 0.5, None)
    if fields.get("history") is None:
        return SpectrumForecaster(num_inference_steps=steps)
    return WindowedSpectrumForecaster(fields["history"], num_inference_steps=steps,
                                      state_device=fields.get("state_device"))


def bytes_per_element() -> dict[str, dict[str, float]]:
    """nbytes / numel after 14 records of a feature of FLUX.1-dev's width (512 tokens x 3072: the figures do
    not depend on the token count, but for the 200-byte Gram matrix), per option and feature dtype."""
    shape = (512, 3072)
    out: dict[str, dict[str, float]] = {}
    for name in OPTIONS:
        row = {}
        for dtype in (torch.bfloat16, torch.float32):
            forecaster = forecaster_of(name)
            feature = torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(dtype)
            for step in (0, 1, 2, 3, 4, 6, 8, 11, 15, 20, 25, 31, 38, 46):
                forecaster.update(step, feature)
            row[str(dtype).removeprefix("torch.")] = forecaster.nbytes / feature.numel()
        # Where the state lives: with state_device="cpu" none of it is on the accelerator.
        row["device_bfloat16"] = 0.0 if OPTIONS[name][0].get("state_device") == "cpu" else row["bfloat16"]
        out[name] = row
    return out


def quality(num_prompts: int, guidances: list[float], alphas: list[float]) -> dict:
    from spectrum_cache.bench.metrics import psnr, to_nchw, to_uint8
    from spectrum_cache.bench.prompts import bundled_prompts
    from spectrum_cache.embedded import load_pipeline
    from spectrum_cache.integrations import generation

    pipe = load_pipeline()
    pipe.set_progress_bar_config(disable=True)
    prompts = bundled_prompts()[:num_prompts]

    def image(prompt: str, seed: int, guidance: float) -> torch.Tensor:
        out = pipe(prompt, num_inference_steps=50, guidance_scale=guidance, output_type="np",
                   generator=torch.Generator().manual_seed(seed)).images
        return to_nchw(to_uint8(np.asarray(out)[0]))

    results: dict = {}
    for guidance in guidances:
        for alpha in alphas:
            results[f"g{guidance:g} a{alpha:g}"] = {name: {"vs_sampler": [], "vs_full_fit": []} for name in OPTIONS}
        for seed, prompt in enumerate(prompts):
            reference = image(prompt, seed, guidance)
            for alpha in alphas:
                cell = results[f"g{guidance:g} a{alpha:g}"]
                images = {}
                for name, (fields, factory) in OPTIONS.items():
                    original = generation.make_forecaster
                    if factory is not None:
                        generation.make_forecaster = factory
                    try:
                        enable_spectrum(pipe, SpectrumConfig(flex_window=alpha, **fields))
                        images[name] = image(prompt, seed, guidance)
                    finally:
                        generation.make_forecaster = original
                        disable_spectrum(pipe)
                    cell[name]["vs_sampler"].append(psnr(images[name], reference))
                    cell[name]["vs_full_fit"].append(psnr(images[name], images["full fp32"]))
            print(f"guidance {guidance:g}: prompt {seed + 1}/{len(prompts)} done", file=sys.stderr, flush=True)
    return results


def _db(values: list[float]) -> str:
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return "identical"
    mean = sum(finite) / len(finite)
    same = len(values) - len(finite)
    return f"{mean:.2f}" + (f" ({same} identical)" if same else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num-prompts", type=int, default=16)
    parser.add_argument("--guidance", default="4,1", help="comma-separated guidance scales (default 4,1)")
    parser.add_argument("--alphas", default="0.75,3.0", help="comma-separated flex_window values (default 0.75,3.0)")
    parser.add_argument("--json", default=None, metavar="FILE", help="also write the figures here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    import warnings

    warnings.filterwarnings("ignore")
    per_element = bytes_per_element()
    print("| option | B/elem, bf16 features | B/elem, fp32 features | on-device B/elem, bf16 |")
    print("|---|---|---|---|")
    for name, row in per_element.items():
        print(f"| {name} | {row['bfloat16']:.2f} | {row['float32']:.2f} | {row['device_bfloat16']:.2f} |")
    print()
    results = quality(args.num_prompts, [float(g) for g in args.guidance.split(",")],
                      [float(a) for a in args.alphas.split(",")])
    cells = list(results)
    print(f"PSNR (dB), mean over {args.num_prompts} prompts, against the full 50-step sampler; change against the "
          "full fit with float32 moments in brackets; then PSNR against the full fit's own image")
    print("| option | " + " | ".join(f"{c} vs sampler" for c in cells) + " | "
          + " | ".join(f"{c} vs full fit" for c in cells) + " |")
    print("|---" * (1 + 2 * len(cells)) + "|")
    for name in OPTIONS:
        row = [name]
        for cell in cells:
            got, base = results[cell][name]["vs_sampler"], results[cell]["full fp32"]["vs_sampler"]
            mean, ref = sum(got) / len(got), sum(base) / len(base)
            row.append(f"{mean:.2f}" + ("" if name == "full fp32" else f" ({mean - ref:+.2f})"))
        row += ["-" if name == "full fp32" else _db(results[cell][name]["vs_full_fit"]) for cell in cells]
        print("| " + " | ".join(row) + " |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"bytes_per_element": per_element, "psnr": results}, f, indent=1)


if __name__ == "__main__":
    main()
