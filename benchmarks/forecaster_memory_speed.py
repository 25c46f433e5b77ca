"""Memory and speed of SpectrumForecaster on a FLUX.1-dev-sized feature (4096 tokens x 3072 channels).

Prints the bytes held after 14 and after 50 updates (against keeping every feature, as the authors'
code does), and the time of update() and predict() as a ratio to one 4096x3072 @ 3072x3072 matmul,
a stand-in for the cheapest layer of a network pass. All timings come from this one run.

    python benchmarks/forecaster_memory_speed.py [--dtype float32|bfloat16] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from spectrum_cache import SpectrumForecaster


def median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    dtype = getattr(torch, args.dtype)
    tokens, channels, steps = 4096, 3072, 50
    gen = torch.Generator().manual_seed(0)
    feature = torch.randn(tokens, channels, generator=gen).to(dtype)
    feature_bytes = feature.numel() * feature.element_size()

    forecaster = SpectrumForecaster(num_inference_steps=steps)
    held = {}
    for s in range(steps):
        forecaster.update(s, feature)
        if s + 1 in (14, 50):
            held[s + 1] = forecaster.nbytes
    mib = 2**20
    print(f"feature {tokens}x{channels} {args.dtype}: {feature_bytes / mib:.1f} MiB, torch threads {torch.get_num_threads()}")
    for n, nbytes in held.items():
        print(
            f"bytes held after {n} updates: {nbytes / mib:.1f} MiB "
            f"(keeping every feature: {n * feature_bytes / mib:.1f} MiB)"
        )

    weight = torch.randn(channels, channels, generator=gen).to(dtype)
    matmul = median_seconds(lambda: feature @ weight, args.repeats)

    def one_update() -> None:
        f = SpectrumForecaster(num_inference_steps=steps)
        f.update(0, feature)

    fresh = median_seconds(one_update, args.repeats)
    update_forecaster = SpectrumForecaster(num_inference_steps=10_000)
    counter = iter(range(10_000))
    update = median_seconds(lambda: update_forecaster.update(next(counter), feature), args.repeats)
    predict = median_seconds(lambda: forecaster.predict(steps - 1), args.repeats)
    print(f"matmul 4096x3072 @ 3072x3072: {matmul * 1e3:.1f} ms")
    print(f"update(): {update * 1e3:.1f} ms = {update / matmul:.2f}x the matmul (first update with allocation: {fresh / matmul:.2f}x)")
    print(f"predict(): {predict * 1e3:.1f} ms = {predict / matmul:.2f}x the matmul")


if __name__ == "__main__":
    main()
