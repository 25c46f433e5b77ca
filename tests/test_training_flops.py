"""benchmarks/training_flops.py counts the training step that the flags describe."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def training_flops(load_benchmark):
    return load_benchmark("training_flops")


def test_flops_follow_the_batch_and_the_token_count(training_flops) -> None:
    small, seconds, params = training_flops.step_flops(training_flops.parse_args(["--batch-size", "4", "--threads", "1"]))
    double, _, _ = training_flops.step_flops(training_flops.parse_args(["--batch-size", "8", "--threads", "1"]))
    assert params > 1_000_000 and seconds > 0
    assert 1.9 < double / small < 2.1  # the same model on twice the images
    # 4x4 patches: 144 image tokens instead of 64 beside the 32 text tokens (176 against 96 in all).
    finer, _, _ = training_flops.step_flops(training_flops.parse_args(["--batch-size", "4", "--threads", "1", "--patch", "4"]))
    assert 1.6 < finer / small < 2.2


def test_run_total_is_steps_times_step(training_flops, capsys: pytest.CaptureFixture[str]) -> None:
    training_flops.main(["--batch-size", "4", "--threads", "1", "--steps", "1000000"])
    lines = capsys.readouterr().out.splitlines()
    step = float(lines[1].split(": ")[1].split(" GFLOP")[0])
    total = float(lines[2].split(": ")[1].split(" PFLOP")[0])
    assert lines[2].startswith("1000000 steps: ")
    assert total == pytest.approx(step, rel=0.02)  # 10^6 steps of G FLOP each are P FLOP
