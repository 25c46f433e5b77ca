"""What keeping the full fit's state in host memory (``state_device="cpu"``) adds to a compute step and to a
forecast step, as ratios to a network pass, on the mid-size FLUX config of flux_transformer_speed.py; and, from
those and stated bandwidths, an estimate for Wan2.1-14B at 720p on a GPU.

    python benchmarks/offload_cost.py --repeats 20

The CPU part: a network pass is the median of plain calls of the mid-size transformer (one timestep, its
inputs); the forecaster's record (``update``) and forecast (``predict``) are timed on the head input's size
(256 image tokens x 512 channels, float32), with the state on the device and in host memory, alternated so both
see the same machine load; each figure is a median. On a CPU the "device" is host memory too, so these measure
the slice-by-slice bookkeeping only; the copies a GPU needs are what the estimate adds.

The GPU estimate (computed, not run): per record the host moments make a round trip through the device
(20 bytes per element each way at degree 4) and the new last feature goes out (2 bytes); per forecast the
moments and the last two features come in (24 bytes). Those bytes over the host link's bandwidth (PCIe Gen4 x16
about 25 GB/s, Gen5 about 50 GB/s per direction, pinned memory), against a pass of Wan2.1-14B at 720p, 81 frames,
estimated from its FLOPs at an achieved 500 TFLOP/s in bfloat16 on an H100 (about half its dense peak).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.join(os.path.dirname(HERE), "src")]

from spectrum_cache import SpectrumForecaster  # noqa: E402

STEPS = (0, 1, 2, 3, 4, 6, 8, 11, 15, 20, 25, 31, 38, 46)  # alpha 0.75 at 50 steps
# Wan2.1-14B: 40 layers of width 5120 (40 heads x 128), FFN 13824; 720p 81 frames is 75,600 tokens.
WAN_TOKENS, WAN_WIDTH, WAN_LAYERS, WAN_FFN, WAN_TEXT = 75_600, 5_120, 40, 13_824, 512
ACHIEVED_FLOPS = 500e12
LINKS = {"PCIe Gen4 x16": 25e9, "PCIe Gen5 x16": 50e9}


def wan_pass_seconds() -> float:
    """FLOPs of one Wan2.1-14B pass at 720p over ACHIEVED_FLOPS: the projections (self-attention q, k, v, o;
    cross-attention q, o and k, v of the text; the FFN) and the attention products (scores and values)."""
    t, d = WAN_TOKENS, WAN_WIDTH
    linear = 2 * t * (4 * d * d + 2 * d * d + 2 * d * WAN_FFN) + 2 * WAN_TEXT * 2 * d * d
    attention = 2 * 2 * t * t * d + 2 * 2 * t * WAN_TEXT * d
    return WAN_LAYERS * (linear + attention) / ACHIEVED_FLOPS


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1e3


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from flux_transformer_speed import SETTINGS, build_transformer, feature_size, make_inputs

    setting = SETTINGS["mid"]
    transformer = build_transformer(setting.config, torch.device("cpu"), torch.float32)
    inputs = make_inputs(setting, torch.device("cpu"), torch.float32)
    numel = feature_size(setting)
    feature = torch.randn(numel // 512, 512, generator=torch.Generator().manual_seed(0))

    passes: list[float] = []
    times: dict[tuple[str, str], list[float]] = {(where, what): [] for where in ("device", "host")
                                                 for what in ("record", "forecast")}
    with torch.no_grad():
        transformer(**inputs, timestep=torch.tensor([0.5]), return_dict=False)  # warm-up
        for _ in range(args.repeats):
            start = time.perf_counter()
            transformer(**inputs, timestep=torch.tensor([0.5]), return_dict=False)
            passes.append(time.perf_counter() - start)
            for where, state_device in (("device", None), ("host", "cpu")):
                forecaster = SpectrumForecaster(num_inference_steps=50, state_device=state_device)
                for step in STEPS[:-1]:
                    forecaster.update(step, feature)
                start = time.perf_counter()
                forecaster.update(STEPS[-1], feature)
                times[(where, "record")].append(time.perf_counter() - start)
                start = time.perf_counter()
                forecaster.predict(49)
                times[(where, "forecast")].append(time.perf_counter() - start)
    pass_ms = median_ms(passes)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"mid-size FLUX: {numel:,} feature elements (float32), network pass median {pass_ms:.1f} ms, "
          f"{args.repeats} repeats, {args.threads} threads, 1-minute load average {load:.1f} at the end")
    print("| step | state on the device, ms | state in host memory, ms | host memory adds, of a pass |")
    print("|---|---|---|---|")
    for what, step in (("record", "compute step (record)"), ("forecast", "forecast step (predict)")):
        device, host = median_ms(times[("device", what)]), median_ms(times[("host", what)])
        print(f"| {step} | {device:.3f} | {host:.3f} | {(host - device) / pass_ms:+.3%} |")

    elements = WAN_TOKENS * WAN_WIDTH
    wan_pass = wan_pass_seconds()
    print(f"\nWan2.1-14B 720p estimate: {elements / 1e6:,.1f} M feature elements per branch; one pass about "
          f"{wan_pass:.1f} s ({ACHIEVED_FLOPS / 1e12:.0f} TFLOP/s achieved, bfloat16)")
    print("| host link | record: 20 B in + 22 B out per element | forecast: 24 B in per element |")
    print("|---|---|---|")
    for name, bandwidth in LINKS.items():
        record = max(20, 22) * elements / bandwidth  # the two directions overlap
        forecast = 24 * elements / bandwidth
        print(f"| {name} ({bandwidth / 1e9:.0f} GB/s) | {record:.2f} s, {record / wan_pass:.1%} of a pass | "
              f"{forecast:.2f} s, {forecast / wan_pass:.1%} of a pass |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
