"""Spectrum's memory at real sizes, computed (not run) from per-element bytes measured on the forecasters here.

    python benchmarks/memory_table.py          # prints the markdown tables of docs/memory.md

For each option the script records a feature on 14 steps (the alpha 0.75 schedule at 50 steps) into the real
forecaster, at two feature sizes, and takes the bytes per feature element as the difference over the difference
in size (so the fixed (M+1)^2 float64 Gram matrix, 200 bytes, drops out). The feature is what the model's head
gets: bfloat16 values, upcast to float32 for Wan (its forward calls its FP32LayerNorm head on
``hidden_states.float()``), and the forecaster is made as the diffusers integration makes it for a bfloat16 model
(``held_dtype`` bfloat16: Wan's upcast features are held in bfloat16, losslessly). The low-precision moments
are the variant of benchmarks/forecaster_options.py (measured, not shipped). Those figures times the feature's
elements give the bytes per CFG branch; under Ulysses context parallelism each rank holds its 1/degree of the
sequence (docs/context-parallel.md), so per rank on the device is that over the degree. Nothing here runs a
model: the sizes are the models' published shapes, and tests/test_memory_table.py checks that docs/memory.md
shows what this script prints.
"""

from __future__ import annotations

import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.join(os.path.dirname(HERE), "src")]

from spectrum_cache import SpectrumForecaster  # noqa: E402
from spectrum_cache.forecast import WindowedSpectrumForecaster  # noqa: E402

STEPS = (0, 1, 2, 3, 4, 6, 8, 11, 15, 20, 25, 31, 38, 46)
# (name, tokens of the head's input, width, how the tokens come about, the dtype of the head's input in a bfloat16
# model: Wan's forward calls its FP32LayerNorm head on hidden_states.float(), so Spectrum records float32 there)
MODELS = (
    ("Wan2.1-14B, 720p, 81 frames", 75_600, 5_120, "21 latent frames x 45 x 80 patches", torch.float32),
    ("Wan2.1-14B, 480p, 81 frames", 32_760, 5_120, "21 latent frames x 30 x 52 patches", torch.float32),
    ("HunyuanVideo, 720p, 129 frames", 118_800, 3_072, "33 latent frames x 45 x 80 patches", torch.bfloat16),
    ("FLUX.1-dev, 1024x1024", 4_096, 3_072, "64 x 64 packed latent patches, image tokens only", torch.bfloat16),
)
DEGREES = (1, 2, 4)


def _options(model_dtype: torch.dtype) -> dict[str, tuple[callable, bool]]:
    """name -> (a new forecaster, whether its state is in host memory), as made for a model of ``model_dtype``."""
    from forecaster_options import LowPrecisionMoments

    held = dict(num_inference_steps=50, held_dtype=model_dtype)
    return {
        "full fit (`history=None`: the default, the paper's)": (lambda: SpectrumForecaster(**held), False),
        "full fit, `state_device=\"cpu\"`": (lambda: SpectrumForecaster(**held, state_device="cpu"), True),
        "full fit, float16 moments (not shipped)": (
            lambda: LowPrecisionMoments(torch.float16, False, num_inference_steps=50), False),
        "`history=5` (a local fit)": (lambda: WindowedSpectrumForecaster(5, **held), False),
        "`history=5, state_device=\"cpu\"`": (
            lambda: WindowedSpectrumForecaster(5, **held, state_device="cpu"), True),
    }


def bytes_per_element(dtype: torch.dtype = torch.bfloat16,
                      model_dtype: torch.dtype = torch.bfloat16) -> dict[str, tuple[float, bool]]:
    """Measured bytes per feature element of each option, and whether they are in host memory: the head's
    input is ``dtype`` holding values of ``model_dtype`` (float32 upcast from bfloat16 for Wan)."""
    out = {}
    for name, (make, on_host) in _options(model_dtype).items():
        held = []
        for tokens in (8, 16):
            forecaster = make()
            feature = torch.randn(tokens, 96, generator=torch.Generator().manual_seed(0)).to(model_dtype).to(dtype)
            for step in STEPS:
                forecaster.update(step, feature)
            held.append(forecaster.nbytes)
        out[name] = ((held[1] - held[0]) / (8 * 96), on_host)
    return out


def _gib(nbytes: float) -> str:
    return f"{nbytes / 2**30:.2f} GiB" if nbytes >= 2**30 else f"{nbytes / 2**20:.0f} MiB"


def tables() -> str:
    lines = []
    for name, tokens, width, how, dtype in MODELS:
        per_element = bytes_per_element(dtype)
        numel = tokens * width
        kind = ("float32 (the head's input is upcast in the forward, even in a bfloat16 model; held in bfloat16, "
                "losslessly)" if dtype == torch.float32 else "bfloat16")
        lines += [f"**{name}**: {tokens:,} tokens ({how}) x {width:,} = {numel / 1e6:,.1f} M elements per branch, "
                  f"{kind}.", "",
                  "| option | bytes / element | per CFG branch | " + " | ".join(
                      f"per rank on the device, CP {d}" for d in DEGREES) + " |",
                  "|---" * (3 + len(DEGREES)) + "|"]
        for option, (bpe, on_host) in per_element.items():
            where = f"{bpe:g} in host memory, 0 on the device" if on_host else f"{bpe:g}"
            ranks = ["0 (host: " + _gib(numel * bpe / d) + ")" if on_host else _gib(numel * bpe / d) for d in DEGREES]
            lines.append(f"| {option} | {where} | {_gib(numel * bpe)} | " + " | ".join(ranks) + " |")
        if name.startswith("Wan"):
            kept = numel * 2  # the bf16 patch embedding, one feature's size
            lines.append(f"| kept patch embedding before issue 28 (stand-in; not sharded: it runs before diffusers' "
                         f"split) | 2 | {_gib(kept)} | " + " | ".join(_gib(kept) for _ in DEGREES) + " |")
            lines.append("| kept stand-in outputs now | 0 | 0 | " + " | ".join("0" for _ in DEGREES) + " |")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def default_table() -> str:
    """The default's bytes per feature element, by model and dtype (Wan's head input is float32 either way)."""
    lines = ["| model, dtype | head input | bytes / element, default (full fit) | `history=5` |", "|---|---|---|---|"]
    first = {True: "full fit (`history=None`: the default, the paper's)", False: "`history=5` (a local fit)"}
    for model, upcast in (("FLUX", False), ("Wan", True)):
        for model_dtype in (torch.bfloat16, torch.float32):
            dtype = torch.float32 if upcast else model_dtype
            measured = bytes_per_element(dtype, model_dtype)
            name = str(model_dtype).removeprefix("torch.")
            lines.append(f"| {model}, {name} | {str(dtype).removeprefix('torch.')} | {measured[first[True]][0]:g} | "
                         f"{measured[first[False]][0]:g} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(default_table())
    print(tables(), end="")
