import numpy as np
import pytest
import torch

from spectrum_cache import SpectrumForecaster
from spectrum_cache.forecast import ReuseForecaster, TaylorForecaster, chebyshev_basis, make_forecaster


def numpy_ridge_forecast(steps, features, target, n, degree, lam):
    """Reference: the paper's closed form, in float64 NumPy."""
    tau = lambda s: 2.0 * s / n - 1.0
    x = np.polynomial.chebyshev.chebvander(np.array([tau(s) for s in steps]), degree)
    h = np.stack([f.reshape(-1) for f in features]).astype(np.float64)
    coef = np.linalg.solve(x.T @ x + lam * np.eye(degree + 1), x.T @ h)
    return np.polynomial.chebyshev.chebvander(np.array([tau(target)]), degree)[0] @ coef


def test_chebyshev_basis_matches_numpy():
    for tau in (-1.0, -0.3, 0.0, 0.7, 1.0):
        np.testing.assert_allclose(chebyshev_basis(tau, 6), np.polynomial.chebyshev.chebvander([tau], 6)[0])


@pytest.mark.parametrize("degree", [0, 1, 2, 4])
def test_recovers_polynomial_of_degree_up_to_m(degree):
    n = 50
    gen = torch.Generator().manual_seed(degree)
    coeffs = torch.randn(degree + 1, 8, 3, generator=gen, dtype=torch.float64)

    def h(s):
        tau = 2 * s / n - 1
        return sum(c * tau**m for m, c in enumerate(coeffs))

    f = SpectrumForecaster(degree=4, ridge_lambda=1e-9, blend_weight=1.0, num_inference_steps=n)
    # The paper's alpha=0.75 schedule; extrapolating far from clustered points would amplify the
    # float32 rounding of the inputs themselves, so the check stays near the recorded span.
    for s in [0, 1, 2, 3, 4, 6, 8, 11, 15, 20, 25, 31, 38, 46]:
        f.update(s, h(s).float())
    for s in (5, 23, 37, 49):
        err = (f.predict(s).double() - h(s)).abs().max() / h(s).abs().max()
        assert err < 1e-4


def test_matches_float64_numpy_ridge_on_random_features():
    n, degree, lam = 50, 4, 0.1
    gen = torch.Generator().manual_seed(0)
    steps = [0, 1, 2, 3, 4, 6, 8, 11, 15]
    feats = [torch.randn(4, 16, 32, generator=gen) for _ in steps]
    f = SpectrumForecaster(degree, lam, blend_weight=1.0, num_inference_steps=n)
    for s, x in zip(steps, feats):
        f.update(s, x)
    for target in (16, 19, 30, 49):
        ref = numpy_ridge_forecast(steps, [x.numpy() for x in feats], target, n, degree, lam)
        got = f.predict(target).double().numpy().reshape(-1)
        assert np.linalg.norm(got - ref) / np.linalg.norm(ref) < 1e-5


def test_blend_weight_zero_is_pure_linear_extrapolation():
    f = SpectrumForecaster(blend_weight=0.0, num_inference_steps=50)
    f.update(2, torch.tensor([1.0, 2.0]))
    f.update(4, torch.tensor([2.0, 6.0]))
    # k = (7 - 4) / (4 - 2) = 1.5: h_last + 1.5 (h_last - h_prev)
    torch.testing.assert_close(f.predict(7), torch.tensor([3.5, 12.0]))


def test_blend_weight_zero_with_one_step_reuses_it():
    f = SpectrumForecaster(blend_weight=0.0)
    f.update(0, torch.tensor([3.0, -1.0]))
    torch.testing.assert_close(f.predict(5), torch.tensor([3.0, -1.0]))


def test_blend_weight_one_ignores_linear_term_and_blend_mixes():
    n, lam = 40, 0.1
    gen = torch.Generator().manual_seed(1)
    steps = [0, 1, 2, 3, 4, 6]
    feats = [torch.randn(10, generator=gen) for _ in steps]
    pure = SpectrumForecaster(blend_weight=1.0, ridge_lambda=lam, num_inference_steps=n)
    half = SpectrumForecaster(blend_weight=0.3, ridge_lambda=lam, num_inference_steps=n)
    for s, x in zip(steps, feats):
        pure.update(s, x)
        half.update(s, x)
    cheb = torch.tensor(numpy_ridge_forecast(steps, [x.numpy() for x in feats], 9, n, 4, lam), dtype=torch.float32)
    torch.testing.assert_close(pure.predict(9), cheb, rtol=1e-5, atol=1e-5)
    linear = feats[-1] + 1.5 * (feats[-1] - feats[-2])
    torch.testing.assert_close(half.predict(9), 0.7 * linear + 0.3 * cheb, rtol=1e-5, atol=1e-5)


def test_prediction_keeps_dtype_shape_and_device():
    f = SpectrumForecaster()
    x = torch.randn(2, 5, 7).to(torch.bfloat16)
    f.update(0, x)
    f.update(1, x * 1.1)
    out = f.predict(3)
    assert out.shape == x.shape and out.dtype == torch.bfloat16 and out.device == x.device


def test_memory_constant_over_100_updates():
    f = SpectrumForecaster(num_inference_steps=200)
    sizes = []
    for s in range(100):
        f.update(s, torch.randn(64, 48))
        sizes.append(f.nbytes)
    assert f.num_recorded == 100
    # After the second update (which adds h_prev) the held bytes never change.
    assert len(set(sizes[1:])) == 1
    # (M+1) float32 moments + two float32 features + the 5x5 float64 Gram matrix.
    assert sizes[-1] == 5 * 64 * 48 * 4 + 2 * 64 * 48 * 4 + 25 * 8


def test_reset_forgets_everything():
    f = SpectrumForecaster()
    f.update(3, torch.ones(4))
    f.reset()
    assert f.num_recorded == 0 and f.feature_shape is None
    with pytest.raises(ValueError, match="predict"):
        f.predict(4)
    f.update(0, torch.ones(2, 2))  # a new shape is fine after reset
    assert f.num_recorded == 1


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"degree": -1}, r"degree must be an integer in \[0, 32\]"),
        ({"ridge_lambda": -1.0}, "ridge_lambda must be a finite number >= 0"),
        ({"blend_weight": 2.0}, r"blend_weight must be a number in \[0, 1\]"),
        ({"num_inference_steps": 0}, "num_inference_steps must be an integer >= 1"),
    ],
)
def test_constructor_rejects_bad_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SpectrumForecaster(**kwargs)


def test_predict_before_update_raises():
    with pytest.raises(ValueError, match="at least one update"):
        SpectrumForecaster().predict(3)


def test_update_with_other_shape_names_both_and_keeps_state():
    f = SpectrumForecaster()
    f.update(0, torch.zeros(2, 3))
    with pytest.raises(ValueError, match=r"\(4, 3\).*\(2, 3\)"):
        f.update(1, torch.zeros(4, 3))
    assert f.num_recorded == 1 and f.last_recorded_step == 0


def test_update_must_move_forward():
    f = SpectrumForecaster()
    f.update(4, torch.zeros(3))
    for step in (4, 2):
        with pytest.raises(ValueError, match="after the last recorded step 4"):
            f.update(step, torch.zeros(3))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_update_refuses_non_finite_features(bad):
    f = SpectrumForecaster()
    f.update(0, torch.ones(3))
    before = f.predict(2)
    x = torch.ones(3)
    x[1] = bad
    with pytest.raises(ValueError, match="NaN or Inf"):
        f.update(1, x)
    assert f.num_recorded == 1 and f.last_recorded_step == 0
    torch.testing.assert_close(f.predict(2), before)


@pytest.mark.parametrize("step", [-1, 50, 1.5e9])
def test_steps_outside_trajectory_raise(step):
    f = SpectrumForecaster(num_inference_steps=50)
    with pytest.raises(ValueError, match=r"step must be a step in \[0, 50\)"):
        f.update(step, torch.ones(1))


def test_ridge_with_zero_lambda_and_too_few_steps_still_solves():
    f = SpectrumForecaster(ridge_lambda=0.0, blend_weight=1.0)
    f.update(0, torch.ones(3))  # one point, five coefficients: singular without jitter
    assert torch.isfinite(f.predict(10)).all()
    torch.testing.assert_close(f.predict(0), torch.ones(3), rtol=1e-4, atol=1e-4)


def test_reuse_forecaster_returns_last_feature():
    f = ReuseForecaster()
    f.update(0, torch.zeros(2))
    f.update(3, torch.tensor([1.0, 2.0]))
    torch.testing.assert_close(f.predict(9), torch.tensor([1.0, 2.0]))


def test_taylor_forecasters_extrapolate_polynomials_of_their_order():
    line = TaylorForecaster(order=1)
    quad = TaylorForecaster(order=2)
    for s in (0, 2, 4):
        line.update(s, torch.tensor([2.0 * s + 1]))
        quad.update(s, torch.tensor([float(s * s)]))
    torch.testing.assert_close(line.predict(7), torch.tensor([15.0]))
    # order 2 from points 0, 2, 4 with step-2 differences: d1 = 6, d2 = (6 - 2)/2 = 2 -> 16 + 6*3 + 2*9/2
    torch.testing.assert_close(quad.predict(7), torch.tensor([43.0]))
    assert quad.nbytes == 3 * 4


def test_taylor_rejects_bad_order():
    with pytest.raises(ValueError, match="order must be an integer >= 0"):
        TaylorForecaster(order=-1)


# -- the lower-memory fit to the last K steps ------------------------------------------------------
def _windowed_case(seed=0):
    gen = torch.Generator().manual_seed(seed)
    steps = [0, 1, 2, 3, 4, 6, 8, 11, 15, 20]
    return steps, [torch.randn(4, 8, generator=gen) for _ in steps]


@pytest.mark.parametrize("w", [0.0, 0.5, 1.0])
def test_windowed_fit_with_the_whole_history_is_the_full_fit(w):
    from spectrum_cache.forecast import WindowedSpectrumForecaster

    steps, feats = _windowed_case()
    full = SpectrumForecaster(blend_weight=w, num_inference_steps=50)
    windowed = WindowedSpectrumForecaster(len(steps), blend_weight=w, num_inference_steps=50)
    for s, x in zip(steps, feats):
        full.update(s, x)
        windowed.update(s, x)
    for target in (21, 30, 49):
        torch.testing.assert_close(windowed.predict(target), full.predict(target), rtol=1e-5, atol=1e-5)


def test_windowed_fit_uses_only_the_last_k_steps():
    from spectrum_cache.forecast import WindowedSpectrumForecaster

    steps, feats = _windowed_case(1)
    k, n, lam = 5, 50, 0.1
    windowed = WindowedSpectrumForecaster(k, 4, lam, blend_weight=1.0, num_inference_steps=n)
    for s, x in zip(steps, feats):
        windowed.update(s, x)
    for target in (21, 35):
        ref = numpy_ridge_forecast(steps[-k:], [x.numpy() for x in feats[-k:]], target, n, 4, lam)
        got = windowed.predict(target).double().numpy().reshape(-1)
        assert np.linalg.norm(got - ref) / np.linalg.norm(ref) < 1e-5
    # The linear part is the same as the full forecaster's: the last two features.
    linear = WindowedSpectrumForecaster(k, blend_weight=0.0, num_inference_steps=n)
    full = SpectrumForecaster(blend_weight=0.0, num_inference_steps=n)
    for s, x in zip(steps, feats):
        linear.update(s, x)
        full.update(s, x)
    torch.testing.assert_close(linear.predict(30), full.predict(30))


def test_windowed_fit_holds_k_features_in_their_dtype():
    from spectrum_cache.forecast import WindowedSpectrumForecaster

    steps, feats = _windowed_case(2)
    windowed = WindowedSpectrumForecaster(5, num_inference_steps=50)
    full = SpectrumForecaster(num_inference_steps=50)
    for s, x in zip(steps, feats):
        windowed.update(s, x.bfloat16())
        full.update(s, x.bfloat16())
    numel = feats[0].numel()
    assert windowed.nbytes == 5 * 2 * numel  # K x bfloat16
    # float32 moments, two bfloat16 features and the (M+1)^2 float64 Gram matrix
    assert full.nbytes == (5 * 4 + 2 * 2) * numel + 25 * 8
    assert windowed.predict(25).dtype == torch.bfloat16


def test_history_must_cover_the_coefficients():
    """K recorded steps cannot pin down more than K coefficients: K < degree + 1 is refused, naming both."""
    from spectrum_cache import SpectrumConfig
    from spectrum_cache.forecast import WindowedSpectrumForecaster, make_forecaster

    for history, degree in ((4, 4), (1, 0), (3, 3), (0, 2), (6, 6)):
        minimum = max(2, degree + 1)
        message = rf"history must be an integer >= {minimum} \(at least degree \+ 1 = {degree + 1} for degree={degree}.*got {history}"
        with pytest.raises(ValueError, match=message):
            SpectrumConfig(history=history, degree=degree)
        with pytest.raises(ValueError, match=message):
            WindowedSpectrumForecaster(history, degree)
        with pytest.raises(ValueError, match=message):
            make_forecaster("chebyshev", 50, degree=degree, history=history)
    for bad in (True, 5.0, "6"):
        with pytest.raises(ValueError, match="history must be an integer"):
            SpectrumConfig(history=bad)
    assert SpectrumConfig(history=5).history == 5 and SpectrumConfig(history=3, degree=2).history == 3
    assert SpectrumConfig(history=np.int64(7)).history == 7


# -- the window in host memory (state_device="cpu") ----------------------------------------------------
def _record_all(forecaster, steps, feats):
    for s, x in zip(steps, feats):
        forecaster.update(s, x)
    return forecaster


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_window_in_host_memory_forecasts_as_on_the_device(dtype, monkeypatch):
    """On CPU features the host window is a plain copy path; its forecasts equal the on-device window's
    bitwise, across slice boundaries too (a 7-element slice splits the 32-element feature unevenly)."""
    from spectrum_cache.forecast import WindowedSpectrumForecaster, chebyshev

    steps, feats = _windowed_case(3)
    feats = [x.to(dtype) for x in feats]
    here = _record_all(WindowedSpectrumForecaster(5, num_inference_steps=50), steps, feats)
    host = _record_all(WindowedSpectrumForecaster(5, num_inference_steps=50, state_device="cpu"), steps, feats)
    expected = {t: here.predict(t) for t in (21, 30, 49)}
    monkeypatch.setattr(chebyshev, "_CHUNK", 7)
    for target, want in expected.items():
        got = host.predict(target)
        assert got.dtype == dtype and got.device == feats[0].device
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    held = host._tensors()
    assert len(held) == 5 and all(t.device.type == "cpu" for t in held)
    assert not any(t.data_ptr() == x.data_ptr() for t in held for x in feats)  # copies, not the caller's tensors
    assert host.nbytes == here.nbytes == 5 * feats[0].numel() * feats[0].element_size()


def test_window_in_host_memory_reuses_the_buffer_it_drops():
    from spectrum_cache.forecast import WindowedSpectrumForecaster

    steps, feats = _windowed_case(4)
    host = _record_all(WindowedSpectrumForecaster(3, 2, num_inference_steps=50, state_device="cpu"), steps[:3], feats[:3])
    oldest = host._tensors()[0].data_ptr()
    host.update(steps[3], feats[3])  # drops the oldest first and writes the new feature into its buffer
    assert host._tensors()[-1].data_ptr() == oldest and len(host._tensors()) == 3
    torch.testing.assert_close(host._tensors()[-1], feats[3].reshape(-1), rtol=0, atol=0)
    torch.testing.assert_close(host._tensors()[0], feats[1].reshape(-1), rtol=0, atol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the pinned, streamed path needs a CUDA device")
def test_window_in_pinned_host_memory_for_cuda_features():
    from spectrum_cache.forecast import WindowedSpectrumForecaster

    steps, feats = _windowed_case(5)
    feats = [x.cuda().repeat(64, 64) for x in feats]  # 256 x 512 elements, bigger than nothing
    here = _record_all(WindowedSpectrumForecaster(5, num_inference_steps=50), steps, feats)
    before = torch.cuda.memory_allocated()
    host = _record_all(WindowedSpectrumForecaster(5, num_inference_steps=50, state_device="cpu"), steps, feats)
    torch.cuda.synchronize()
    assert torch.cuda.memory_allocated() == before  # the window holds nothing on the device
    assert all(t.device.type == "cpu" and t.is_pinned() for t in host._tensors())
    for target in (21, 30, 49):
        got = host.predict(target)
        assert got.device == feats[0].device
        torch.testing.assert_close(got, here.predict(target), rtol=0, atol=0)


def test_state_device_is_checked():
    from spectrum_cache import SpectrumConfig
    from spectrum_cache.forecast import WindowedSpectrumForecaster, make_forecaster

    for bad in ("cuda", "gpu", 0, True):
        with pytest.raises(ValueError, match="state_device must be None .* or 'cpu'"):
            SpectrumConfig(history=5, state_device=bad)
        with pytest.raises(ValueError, match="state_device must be None .* or 'cpu'"):
            SpectrumConfig(state_device=bad)
        with pytest.raises(ValueError, match="state_device must be None"):
            WindowedSpectrumForecaster(5, state_device=bad)
        with pytest.raises(ValueError, match="state_device must be None"):
            SpectrumForecaster(state_device=bad)
    with pytest.raises(ValueError, match="state_device='cpu' .* needs forecaster='chebyshev'"):
        SpectrumConfig(history=5, forecaster="reuse", state_device="cpu")
    with pytest.raises(ValueError, match="state_device needs the Chebyshev forecaster"):
        make_forecaster("taylor1", 50, state_device="cpu")
    assert SpectrumConfig(history=5, state_device=torch.device("cpu")).state_device == "cpu"
    assert SpectrumConfig(state_device="cpu").state_device == "cpu"  # the full fit too


# -- the paper's forecaster by default -------------------------------------------------------------
def test_the_default_config_is_the_papers_forecaster():
    """SpectrumConfig() is the paper's method: the global fit over every recorded step (history None),
    Chebyshev degree 4, lambda 0.1, the adaptive schedule with warm-up 5, window 2 and alpha 0.75, on the
    step axis, each CFG branch forecast by its own forecaster; w 0.5, the authors' published recommendation."""
    from spectrum_cache import SpectrumConfig
    from spectrum_cache.forecast import make_forecaster
    from spectrum_cache.schedule import compute_steps

    c = SpectrumConfig()
    assert (c.forecaster, c.history, c.degree, c.ridge_lambda, c.blend_weight) == ("chebyshev", None, 4, 0.1, 0.5)
    assert (c.warmup_steps, c.window_size, c.flex_window, c.time_axis) == (5, 2, 0.75, "step")
    assert (c.guidance_forecast, c.state_device, c.compute_steps) == ("independent", None, None)
    assert compute_steps(c, 50) == [0, 1, 2, 3, 4, 6, 8, 11, 15, 20, 25, 31, 38, 46]
    made = make_forecaster(c.forecaster, 50, c.degree, c.ridge_lambda, c.blend_weight, None, c.history, c.state_device)
    assert type(made) is SpectrumForecaster


@pytest.mark.parametrize("degree", [0, 1, 2, 3, 4])
def test_the_default_forecaster_extrapolates_polynomials_exactly(degree):
    """A trajectory that is a polynomial of degree <= 4 in the step is forecast exactly, up to the float32
    rounding of X^T H (which an ill-conditioned early fit amplifies: hence the looser bound before every
    record is in), by the default config's forecaster on the steps its schedule skips, with the ridge
    penalty near 0 so it does not shrink the fit (w = 1; and the default w = 0.5 for degree <= 1, the
    degrees its linear part extrapolates exactly). A sign error in tau or in the extrapolation fails it."""
    from spectrum_cache import SpectrumConfig
    from spectrum_cache.forecast import make_forecaster
    from spectrum_cache.schedule import compute_steps

    c, n = SpectrumConfig(), 50
    gen = torch.Generator().manual_seed(degree)
    coefficients = torch.randn(degree + 1, 3, 5, generator=gen, dtype=torch.float64)

    def h(s: float) -> torch.Tensor:
        return sum(coefficients[j] * ((s - 20) / n) ** j for j in range(degree + 1))

    computed = compute_steps(c, n)
    for w in (1.0, c.blend_weight) if degree <= 1 else (1.0,):
        f = make_forecaster(c.forecaster, n, c.degree, 1e-9, w, None, c.history, c.state_device)
        for s in range(n):
            if s in computed:
                f.update(s, h(s).float())
            elif f.num_recorded >= 11:  # from step 32 on, each skipped step from the records before it
                err = (f.predict(s).double() - h(s)).abs().max() / h(s).abs().max()
                assert err < 1e-3, (w, s, float(err))
        for s in range(n):  # with every record in: the whole trajectory, and past the last record (46)
            err = (f.predict(s).double() - h(s)).abs().max() / h(s).abs().max()
            assert err < 1e-4, (w, s, float(err))


@pytest.mark.parametrize("history", [None, 5])
def test_features_held_in_a_narrower_dtype_only_where_it_is_lossless(history):
    """float32 features whose values are bfloat16 ones (Wan's head input) are held in bfloat16: the held
    copies equal the features exactly, the forecasts equal those of holding float32, and the bytes drop to
    24 per element (full fit). A float32 feature with real float32 precision stays float32."""
    from spectrum_cache.forecast import make_forecaster

    steps, feats = _windowed_case(6)
    upcast = [x.bfloat16().float() for x in feats]
    wide = _record_all(make_forecaster("chebyshev", 50, history=history), steps, upcast)
    narrow = _record_all(make_forecaster("chebyshev", 50, history=history, held_dtype=torch.bfloat16), steps, upcast)
    numel = feats[0].numel()
    held = [t for t in narrow._tensors() if t is not None and t.numel() == numel]
    assert held and all(t.dtype == torch.bfloat16 for t in held)
    recorded = upcast[-len(held):] if history else upcast[-2:]
    for copy in held:  # every held feature is exactly one of the recorded ones
        assert any(torch.equal(copy.float(), x.reshape(-1)) for x in recorded)
    for target in (21, 30, 49):
        got = narrow.predict(target)
        assert got.dtype == torch.float32
        torch.testing.assert_close(got, wide.predict(target), rtol=0, atol=0)
    torch.testing.assert_close(narrow.last_feature, upcast[-1], rtol=0, atol=0)
    if history is None:
        assert narrow.nbytes == (5 * 4 + 2 * 2) * numel + 25 * 8  # 24 B per element, as bfloat16 features
        assert wide.nbytes == (5 * 4 + 2 * 4) * numel + 25 * 8
    else:
        assert narrow.nbytes * 2 == wide.nbytes == 5 * 4 * numel
    # Real float32 values are not exact in bfloat16: kept as they are, whatever held_dtype says.
    kept = _record_all(make_forecaster("chebyshev", 50, history=history, held_dtype=torch.bfloat16), steps, feats)
    assert all(t.dtype == torch.float32 for t in kept._tensors() if t is not None and t.numel() == numel)
    torch.testing.assert_close(kept.predict(30), _record_all(make_forecaster("chebyshev", 50, history=history),
                                                             steps, feats).predict(30), rtol=0, atol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the deferred check is the accelerator path")
def test_on_an_accelerator_the_held_dtype_is_taken_and_its_check_kept_on_the_device():
    """On CUDA the first record is held in ``held_dtype`` without the host waiting for a check; whether it was
    exact is a device flag (``held_exactly``), read when the generation ends."""
    exact = torch.randn(4, 8).to(torch.bfloat16).float().cuda()
    inexact = (torch.randn(4, 8) + 1e-3).cuda()
    for feature, expected in ((exact, True), (inexact, False)):
        forecaster = make_forecaster("chebyshev", 10, held_dtype=torch.bfloat16)
        forecaster.update(0, feature, check_finite=False)
        assert forecaster.held_exactly is not None and forecaster.held_exactly.is_cuda
        assert bool(forecaster.held_exactly) is expected


def test_held_dtype_is_checked():
    with pytest.raises(ValueError, match="held_dtype must be None or a floating-point torch.dtype"):
        SpectrumForecaster(held_dtype=torch.int8)
    with pytest.raises(ValueError, match="held_dtype must be None or a floating-point torch.dtype"):
        SpectrumForecaster(held_dtype="bfloat16")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("w", [0.0, 0.5, 1.0])
def test_full_fit_in_host_memory_forecasts_as_on_the_device(dtype, w, monkeypatch):
    """state_device="cpu" with the full fit: X^T H and the last two features in host memory, in slices (a
    7-element slice splits the 32-element feature unevenly); the forecasts equal the on-device fit's bitwise,
    and every tensor it holds is on the host."""
    from spectrum_cache.forecast import chebyshev

    monkeypatch.setattr(chebyshev, "_CHUNK", 7)
    steps, feats = _windowed_case(7)
    feats = [x.to(dtype) for x in feats]
    here = SpectrumForecaster(blend_weight=w, num_inference_steps=50)
    host = SpectrumForecaster(blend_weight=w, num_inference_steps=50, state_device="cpu")
    for s, x in zip(steps, feats):
        here.update(s, x)
        host.update(s, x)
        for target in (s + 1, 49):
            got = host.predict(target)
            assert got.dtype == dtype and got.shape == x.shape
            torch.testing.assert_close(got, here.predict(target), rtol=0, atol=0)
    assert len(host._host_moments) == 5 and host._moments is None  # ceil(32 / 7) slices
    assert host.nbytes == here.nbytes
    torch.testing.assert_close(host.last_feature, feats[-1], rtol=0, atol=0)
    host.reset()
    assert host.nbytes == 0 and host.num_recorded == 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the pinned, streamed path needs a CUDA device")
def test_full_fit_in_pinned_host_memory_for_cuda_features():
    steps, feats = _windowed_case(8)
    feats = [x.cuda().repeat(64, 64) for x in feats]
    here = _record_all(SpectrumForecaster(num_inference_steps=50), steps, feats)
    before = torch.cuda.memory_allocated()
    host = _record_all(SpectrumForecaster(num_inference_steps=50, state_device="cpu"), steps, feats)
    torch.cuda.synchronize()
    assert torch.cuda.memory_allocated() == before  # the state holds nothing on the device
    assert all(t.device.type == "cpu" and t.is_pinned() for t in host._tensors()[1:] if t is not None)
    for target in (21, 30, 49):
        torch.testing.assert_close(host.predict(target), here.predict(target), rtol=1e-6, atol=1e-6)
