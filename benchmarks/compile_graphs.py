"""How torch.compile sees Spectrum: graphs compiled and graph breaks, with and without Spectrum.

    PYTHONPATH=src python benchmarks/compile_graphs.py whole      # transformer.compile(), two generations
    PYTHONPATH=src python benchmarks/compile_graphs.py regional   # compile_repeated_blocks(fullgraph=True)
    ... --no-spectrum                                             # the same without Spectrum

Runs the tiny random-initialised FLUX pipeline of the tests (tests/families.py) on CPU with dynamo's
"eager" backend, so the counts are dynamo's (what recompiles and where the graph breaks), not a
backend's speed. ``whole`` runs two 12-step generations; ``regional`` runs four 4-step calls that
change the resolution, the batch and the CFG mode (true CFG in cond/uncond contexts).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings

import torch
from torch._dynamo.utils import counters

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
from families import flux  # noqa: E402

from spectrum_cache import SpectrumConfig, enable_spectrum  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("whole", "regional"))
    parser.add_argument("--no-spectrum", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    pipe, kwargs = flux()
    pipe.set_progress_bar_config(disable=True)
    if not args.no_spectrum:
        enable_spectrum(pipe, SpectrumConfig(warmup_steps=3 if args.mode == "whole" else 1))
    if args.mode == "whole":
        pipe.transformer.compile(backend="eager")
        calls = [{}, {}]
    else:
        pipe.transformer.compile_repeated_blocks(fullgraph=True, backend="eager")
        negative = {"negative_prompt_embeds": torch.randn(1, 6, 24), "negative_pooled_prompt_embeds": torch.randn(1, 20)}
        calls = [
            {"height": 16, "width": 16},
            {"height": 24, "width": 24, "num_images_per_prompt": 1},  # another batch: the builder runs 2
            {"height": 16, "width": 16, "true_cfg_scale": 2.0, **negative},
            {"height": 32, "width": 32},
        ]
        calls = [{**call, "num_inference_steps": 4} for call in calls]
    for i, call in enumerate(calls):
        start = time.perf_counter()
        pipe(**{**kwargs, **call})
        print(
            f"call {i}: {time.perf_counter() - start:.1f} s, graphs compiled so far "
            f"{counters['stats']['unique_graphs']}, graph breaks {sum(counters['graph_break'].values())}"
        )


if __name__ == "__main__":
    main()
