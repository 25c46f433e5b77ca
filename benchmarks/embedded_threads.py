"""The README's embedded snippet (50 steps, Spectrum on, seed 0) timed with torch's default threads (the
behaviour before the pipeline chose its own) and with the pipeline's choice (one thread on the CPU), alternated
in one process so both see the same machine load.

    python benchmarks/embedded_threads.py --rounds 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.join(os.path.dirname(HERE), "src")]

import torch  # noqa: E402

from spectrum_cache import SpectrumConfig, enable_spectrum  # noqa: E402
from spectrum_cache.embedded import load_pipeline  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    pipe = load_pipeline()
    pipe.set_progress_bar_config(disable=True)
    enable_spectrum(pipe, SpectrumConfig())
    default_threads = torch.get_num_threads()
    times: dict[str, list[float]] = {f"torch's default ({default_threads} threads)": [], "the pipeline's (1 thread)": []}
    for _ in range(args.rounds):
        for label, threads in zip(times, (None, 1)):
            pipe.cpu_threads = threads
            start = time.perf_counter()
            pipe("a red circle and a green square", num_inference_steps=50, generator=torch.Generator().manual_seed(0))
            times[label].append(time.perf_counter() - start)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"{os.cpu_count()} cores, 1-minute load average {load:.1f} at the end")
    for label, seconds in times.items():
        print(f"{label}: median {statistics.median(seconds):.2f} s of {', '.join(f'{s:.2f}' for s in seconds)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
