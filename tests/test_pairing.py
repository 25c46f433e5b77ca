"""PairedForecaster: the secondary CFG branch as the primary's forecast plus a forecast of the difference."""

from __future__ import annotations

import pytest
import torch

from spectrum_cache.forecast import PRIMARY, SECONDARY, PairedForecaster, ReuseForecaster, SpectrumForecaster

STEPS = [0, 1, 2, 3, 4, 6, 8, 11, 15, 20, 25, 31, 38, 46]  # the paper's alpha = 0.75 schedule at N = 50


def _trajectory(seed: int, n: int = 50, shape: tuple[int, ...] = (3, 7)) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    a, b, c = (torch.randn(shape, generator=g) for _ in range(3))
    return [a + b * (s / n) + c * torch.sin(torch.tensor(3.0 * s / n)) for s in range(n)]


def _paired() -> PairedForecaster:
    return PairedForecaster(SpectrumForecaster(num_inference_steps=50), ReuseForecaster(num_inference_steps=50))


def test_identical_branches_forecast_like_independent_spectrum() -> None:
    h = _trajectory(0)
    paired, alone = _paired(), SpectrumForecaster(num_inference_steps=50)
    for s in range(50):
        if s in STEPS:
            paired.update(PRIMARY, s, h[s])
            paired.update(SECONDARY, s, h[s].clone())
            alone.update(s, h[s])
        else:
            expected = alone.predict(s)
            assert torch.equal(paired.predict(PRIMARY, s), expected)
            assert torch.allclose(paired.predict(SECONDARY, s), expected, atol=1e-6)


def test_constant_difference_is_carried_exactly() -> None:
    h = _trajectory(1)
    offset = torch.randn(3, 7, generator=torch.Generator().manual_seed(9))
    paired = _paired()
    for s in STEPS[:8]:
        paired.update(PRIMARY, s, h[s])
        paired.update(SECONDARY, s, h[s] + offset)
    primary = paired.predict(PRIMARY, 9)
    assert torch.allclose(paired.predict(SECONDARY, 9) - primary, offset, atol=1e-5)


def test_the_last_measured_difference_is_used() -> None:
    h = _trajectory(2)
    paired = _paired()
    for i, s in enumerate(STEPS[:6]):
        paired.update(PRIMARY, s, h[s])
        paired.update(SECONDARY, s, h[s] + i)  # the difference grows; reuse keeps the last one (5)
    assert torch.allclose(paired.predict(SECONDARY, 7) - paired.predict(PRIMARY, 7), torch.full((3, 7), 5.0))


def test_branch_order_and_batching_do_not_matter() -> None:
    h, k = _trajectory(3), _trajectory(4)
    one, two, three = _paired(), _paired(), _paired()
    for s in STEPS[:9]:
        one.update(PRIMARY, s, h[s])
        one.update(SECONDARY, s, k[s])
        two.update(SECONDARY, s, k[s])  # the other branch's call comes first
        two.update(PRIMARY, s, h[s])
        three.update_batched(s, h[s], k[s])
    for branch in (PRIMARY, SECONDARY):
        assert torch.equal(one.predict(branch, 12), two.predict(branch, 12))
        assert torch.equal(one.predict(branch, 12), three.predict(branch, 12))


def test_secondary_holds_only_the_difference() -> None:
    h = _trajectory(5, shape=(64, 32))
    paired, alone = _paired(), SpectrumForecaster(num_inference_steps=50)
    for s in STEPS[:6]:
        paired.update_batched(s, h[s], h[s] * 2)
        alone.update(s, h[s])
    feature_bytes = h[0].numel() * h[0].element_size()
    assert paired.nbytes == alone.nbytes + feature_bytes  # independent forecasting would double alone.nbytes


def test_secondary_needs_a_recorded_difference() -> None:
    h = _trajectory(6)
    paired = _paired()
    paired.update(PRIMARY, 0, h[0])
    assert paired.ready(PRIMARY) and not paired.ready(SECONDARY)
    paired.update(SECONDARY, 1, h[1])  # a step the primary never recorded: no difference yet
    assert not paired.ready(SECONDARY)
    paired.update(PRIMARY, 1, h[1])
    assert paired.ready(SECONDARY)
    paired.reset()
    empty = SpectrumForecaster(num_inference_steps=50).nbytes  # the (M+1)^2 Gram matrix stays allocated
    assert not paired.ready(PRIMARY) and paired.nbytes == empty


def test_bad_arguments() -> None:
    reuse = ReuseForecaster(num_inference_steps=10)
    with pytest.raises(ValueError, match="two forecaster objects"):
        PairedForecaster(reuse, reuse)
    paired = _paired()
    with pytest.raises(ValueError, match="branch must be 0"):
        paired.update(2, 0, torch.zeros(2))
    paired.update(SECONDARY, 3, torch.zeros(2))
    with pytest.raises(ValueError, match="already recorded step 3"):
        paired.update(SECONDARY, 3, torch.zeros(2))
