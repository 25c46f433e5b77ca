"""Spectrum under diffusers' Ulysses context parallelism: two gloo processes on CPU (torchrun) against one.

tests/context_parallel_worker.py runs FluxPipeline and WanPipeline (CFG, cond / uncond contexts) on tiny
random-initialised transformers with distinct widths, with ``ContextParallelConfig(ulysses_degree=2)``
on the transformer, with and without Spectrum. Here the same pipelines run in this one process without
context parallelism. Spectrum under Ulysses must give the single-process Spectrum latents on the same
compute steps, and each rank's forecaster must hold only its shard of the sequence.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import context_parallel_worker as worker

TESTS = Path(__file__).resolve().parent
WORLD_SIZE = 2
TOLERANCE = 1e-5
FAMILIES = ("flux", "wan")


def _distributed_unavailable() -> str | None:
    if not torch.distributed.is_available():
        return "torch.distributed is not available in this torch build"
    if not torch.distributed.is_gloo_available():
        return "torch.distributed has no gloo backend in this torch build"
    return None


def _launch(out: Path, *args: str) -> subprocess.CompletedProcess:
    """tests/context_parallel_worker.py OUT ARGS on WORLD_SIZE gloo ranks on the CPU."""
    reason = _distributed_unavailable()
    if reason:
        pytest.skip(reason)
    env = {
        **os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore::FutureWarning",
        "CUDA_VISIBLE_DEVICES": "",  # gloo on CPU tensors even on a GPU machine
    }
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={WORLD_SIZE}",
        str(TESTS / "context_parallel_worker.py"), str(out), *args,
    ]
    try:
        return subprocess.run(command, cwd=TESTS.parent, env=env, capture_output=True, text=True, timeout=180)
    except subprocess.TimeoutExpired as error:
        stderr = error.stderr.decode(errors="replace") if isinstance(error.stderr, bytes) else (error.stderr or "")
        pytest.fail(f"torchrun did not finish in {error.timeout} s:\n{stderr[-4000:]}")


@pytest.fixture(scope="module")
def parallel(tmp_path_factory) -> list[dict]:
    """Both ranks' results of one torchrun launch (both families, all runs)."""
    out = tmp_path_factory.mktemp("context_parallel")
    done = _launch(out, *FAMILIES)
    assert done.returncode == 0, f"torchrun failed ({done.returncode}):\n{done.stderr[-6000:]}"
    results = [torch.load(out / f"rank{rank}.pt", weights_only=False) for rank in range(WORLD_SIZE)]
    assert [r["world_size"] for r in results] == [WORLD_SIZE] * WORLD_SIZE
    return results


_SINGLE: dict[tuple[str, bool], dict] = {}


def single(family: str, spectrum: bool) -> dict:
    """The same pipeline in this one process, no context parallelism (computed once)."""
    if (family, spectrum) not in _SINGLE:
        _SINGLE[family, spectrum] = worker.run(family, spectrum=spectrum, parallel=False)
    return _SINGLE[family, spectrum]


def _steps(summary: list[dict]) -> list[tuple]:
    return [(b["denoiser"], b["branch"], b["computed_steps"], b["forecast_steps"]) for b in summary]


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape
    return (a.double() - b.double()).abs().max().item()


@pytest.mark.parametrize("run", ["spectrum", "spectrum_first"])
@pytest.mark.parametrize("family", FAMILIES)
def test_ulysses_gives_the_single_process_spectrum_output(parallel, family, run):
    """``spectrum``: enable_parallelism then enable_spectrum (the documented order); ``spectrum_first``:
    the other order. Both must match one process with Spectrum, on the same steps."""
    reference, plain = single(family, spectrum=True), single(family, spectrum=False)
    branches = {"flux": ["cond"], "wan": ["cond", "uncond"]}[family]
    assert [b["branch"] for b in reference["summary"]] == branches
    for b in reference["summary"]:
        assert b["forecast_steps"], "the schedule forecasts no step: the comparison would prove nothing"
        assert len(b["computed_steps"]) + len(b["forecast_steps"]) == worker.STEPS
    # Forecasting changes the output: a Spectrum that ran every step would also "match".
    assert _max_diff(reference["output"], plain["output"]) > 1e-3

    for rank, result in enumerate(parallel):
        got = result[family][run]
        assert _steps(got["summary"]) == _steps(reference["summary"]), f"rank {rank}"
        assert _max_diff(got["output"], reference["output"]) <= TOLERANCE, f"rank {rank}"
        assert _max_diff(got["output"], result[family]["plain"]["output"]) > 1e-3, f"rank {rank}"
    # Every rank gathers the same full output.
    assert torch.equal(parallel[0][family][run]["output"], parallel[1][family][run]["output"])


@pytest.mark.parametrize("family", FAMILIES)
def test_ulysses_without_spectrum_is_the_single_process_output(parallel, family):
    """The baseline the Spectrum comparison rests on: context parallelism alone changes nothing."""
    for result in parallel:
        assert result[family]["plain"]["summary"] is None
        assert _max_diff(result[family]["plain"]["output"], single(family, spectrum=False)["output"]) <= TOLERANCE


@pytest.mark.parametrize("family", FAMILIES)
def test_each_rank_forecasts_only_its_shard_of_the_sequence(parallel, family):
    """Ulysses shards the token sequence between the blocks, so the feature Spectrum records (the head's
    input) is each rank's half: the forecaster's bytes per rank are the single-process bytes over two,
    plus the fixed (sequence-independent) normal-equation matrix, under 1 KiB here. The skipped input
    modules keep nothing between steps, on any rank: Wan's patch embedding, which runs before diffusers'
    split (at blocks.0), would otherwise be the full sequence on every rank."""
    reference = single(family, spectrum=True)["summary"]
    for result in parallel:
        for got, ref in zip(result[family]["spectrum"]["summary"], reference):
            fixed = 2 * got["peak_bytes"] - ref["peak_bytes"]
            assert 0 <= fixed < 1024, (got["peak_bytes"], ref["peak_bytes"])
            assert got["stand_in_bytes"] == ref["stand_in_bytes"] == 0
    # The shadow error is each rank's own, of its slice of the sequence: the same steps, other values.
    summaries = [[{k: v for k, v in b.items() if k != "shadow_errors"} for b in r[family]["spectrum"]["summary"]]
                 for r in parallel]
    assert summaries[0] == summaries[1]
    shadow = [[[step for step, _ in b["shadow_errors"]] for b in r[family]["spectrum"]["summary"]] for r in parallel]
    assert shadow[0] == shadow[1] and any(shadow[0])


@pytest.mark.parametrize(
    "family",
    [
        "flux",
        "wan",  # diffusers' own cp_input--- split hooks on the skipped blocks.0 and rope are quiet
    ],
)
def test_context_parallelism_raises_no_spectrum_warning(parallel, family):
    for result in parallel:
        for run in ("spectrum", "spectrum_first"):
            assert result[family][run]["warnings"] == [], run


def test_a_non_finite_forecast_on_one_rank_keeps_the_ranks_in_step(tmp_path):
    """Rank 1's shard of the feature is finite at compute step 6 but its forecast at step 7 overflows. Every
    rank must still take the same decision at every step (whatever it is), so the generation finishes."""
    done = _launch(tmp_path, "overflow")
    if done.returncode != 0 and "non-finite forecast at step 7" not in done.stderr:
        pytest.fail(f"the worker failed before the forecast in question ({done.returncode}):\n{done.stderr[-3000:]}")
    assert done.returncode == 0, f"the ranks fell out of step ({done.returncode}):\n{done.stderr[-3000:]}"
    summaries = [torch.load(tmp_path / f"overflow{r}.pt", weights_only=False)["summary"] for r in range(WORLD_SIZE)]
    assert _steps(summaries[0]) == _steps(summaries[1])
