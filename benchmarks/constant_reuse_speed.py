"""What reusing the pooled-text projection saves on a forecast step (the adapter table's constant_paths).

    python benchmarks/constant_reuse_speed.py      # the mid-size FLUX of flux_transformer_speed.py --config mid

Times every forecast call of 50-step Euler loops with Spectrum (alpha 0.75) on a bare FluxTransformer2DModel,
alternating runs with the reuse on and off (constant_paths emptied) in one process, and prints the medians.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

import torch

import flux_transformer_speed as speed
from spectrum_cache import SpectrumConfig, compute_steps
from spectrum_cache.integrations import adapters, disable_spectrum, enable_spectrum


def forecast_calls(transformer: torch.nn.Module, inputs: dict[str, torch.Tensor], config: SpectrumConfig,
                   reuse: bool) -> list[float]:
    """Seconds of each forecast call of one 50-step loop."""
    name = type(transformer).__name__
    adapter = adapters.ADAPTERS[name]
    adapters.ADAPTERS[name] = adapter if reuse else dataclasses.replace(adapter, constant_paths=())
    try:
        enable_spectrum(transformer, config)
        forecast = set(range(config.num_inference_steps)) - set(compute_steps(config))
        sigmas = torch.linspace(1, 0, config.num_inference_steps + 1).tolist()
        x, seconds = inputs["hidden_states"], []
        with torch.no_grad():
            for i in range(config.num_inference_steps):
                start = time.perf_counter()
                with transformer.cache_context("cond"):
                    v = transformer(**{**inputs, "hidden_states": x}, timestep=torch.full((1,), sigmas[i]),
                                    return_dict=False)[0]
                if i in forecast:
                    seconds.append(time.perf_counter() - start)
                x = x + (sigmas[i + 1] - sigmas[i]) * v
    finally:
        disable_spectrum(transformer)
        adapters.ADAPTERS[name] = adapter
    return seconds


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", choices=sorted(speed.SETTINGS), default="mid")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=4, help="timed loops per setting (one untimed first)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    setting = speed.SETTINGS[args.config]
    device = torch.device("cpu")
    transformer = speed.build_transformer(setting.config, device, torch.float32)
    inputs = speed.make_inputs(setting, device, torch.float32)
    config = SpectrumConfig(num_inference_steps=50, flex_window=0.75)
    times: dict[bool, list[float]] = {True: [], False: []}
    for reuse in (True, False):
        forecast_calls(transformer, inputs, config, reuse)
    for _ in range(args.repeats):
        for reuse in (True, False):
            times[reuse] += forecast_calls(transformer, inputs, config, reuse)
    for reuse in (True, False):
        label = "pooled-text projection reused" if reuse else "run on every call"
        print(f"{label}: forecast call median {1000 * statistics.median(times[reuse]):.3f} ms over {len(times[reuse])} calls")


if __name__ == "__main__":
    main()
