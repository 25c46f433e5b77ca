"""Every denoiser class of diffusers 0.42.1 (tests/denoisers.py) under Spectrum, as a bare denoiser in a
hand-written Euler loop, at widths that all differ and on non-square latents.

For each class, one build and six loops of ``STEPS`` steps:
(a) the every-step schedule gives the outputs of no Spectrum, bit for bit;
(b) the paper's schedule (warm-up 3, alpha 0.75) runs the blocks only on its compute steps, the
    forecasts are finite and change the result, and the summary lists exactly those compute steps;
(c) after ``disable_spectrum`` the outputs are the baseline's again and no Spectrum hook is left;
(d) every module the forward runs before its first block runs on every call of the paper's schedule, and
    only a class listed in ``adapters.STAND_INS`` has stand-ins (for its single skipped blocks).
A class Spectrum cannot support is refused at enable with the reason, leaving the model untouched.
"""

from __future__ import annotations

import inspect
import warnings

import pytest
import torch

from denoisers import DENOISERS, NOT_DENOISERS, STEPS, Denoiser, build, denoise
from helpers import modules_before_the_blocks, own_forward_runs
from spectrum_cache import SpectrumConfig, compute_steps, disable_spectrum, enable_spectrum, spectrum_summary
from spectrum_cache.integrations import UnsupportedModelError
from spectrum_cache.integrations.adapters import STAND_INS, resolve_adapter

EVERY_STEP = SpectrumConfig(num_inference_steps=STEPS, warmup_steps=STEPS)
PAPER = SpectrumConfig(num_inference_steps=STEPS, warmup_steps=3, flex_window=0.75)
SUPPORTED = [e for e in DENOISERS if e.reason is None]
REFUSED = [e for e in DENOISERS if e.reason is not None]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models on shared cores: one intra-op thread is several times faster than two."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def first_layer(block: torch.nn.Module) -> torch.nn.Module:
    """The block's first Linear or convolution outside an embedder: a skipped block never reaches it.
    (DiT's blocks hold the timestep embedder, which its forward also calls after the loop.)"""
    kinds = (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d)
    return next(m for name, m in block.named_modules() if isinstance(m, kinds) and "emb" not in name)


class PassCounter:
    """Counts runs of the first layer of ``block``, or of every skipped block: a forward that reaches a
    block some other way than by iterating its list (a slice, ``reversed``) shows here, since a counter
    on a leaf does not fire for a stand-in."""

    def __init__(self, model: torch.nn.Module, block: torch.nn.Module | None = None):
        self.count = 0
        blocks = [block] if block is not None else resolve_adapter(model).blocks
        self.handles = [first_layer(b).register_forward_hook(self._hook) for b in blocks]

    def _hook(self, *args) -> None:
        self.count += 1

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()

    def take(self) -> int:
        count, self.count = self.count, 0
        return count


def spectrum_hooks(model: torch.nn.Module) -> list[str]:
    return [name for sub in model.modules() if (registry := getattr(sub, "_diffusers_hook", None)) is not None
            for name in registry.hooks if name.startswith("spectrum_cache")]


def check_schedules(entry: Denoiser, model, inputs, config_extra: dict | None = None) -> torch.Tensor:
    """(a), (b) and (c) on one model; returns the forecast run's latents."""
    extra = config_extra or {}
    counter = PassCounter(model) if not extra.get("forecast_output") else None
    try:
        baseline = denoise(entry, model, inputs)
        full = counter.take() if counter else None
        assert full is None or full > 0

        enable_spectrum(model, EVERY_STEP.replace(**extra))
        torch.testing.assert_close(denoise(entry, model, inputs), baseline, rtol=0, atol=0)
        (branch,) = spectrum_summary(model).branches
        assert list(branch.computed_steps) == list(range(STEPS)) and not branch.forecast_steps
        assert counter is None or counter.take() == full
        disable_spectrum(model)

        config = PAPER.replace(**extra)
        expected = compute_steps(config, STEPS)
        assert len(expected) < STEPS
        enable_spectrum(model, config)
        forecast = denoise(entry, model, inputs)
        assert torch.isfinite(forecast).all()
        assert not torch.equal(forecast, baseline)
        (branch,) = spectrum_summary(model).branches
        assert list(branch.computed_steps) == expected
        assert sorted(branch.computed_steps + branch.forecast_steps) == list(range(STEPS))
        if counter:  # the blocks ran on the compute steps only, as often per step as without Spectrum
            assert counter.take() * STEPS == full * len(expected)
        disable_spectrum(model)

        assert not spectrum_hooks(model)
        torch.testing.assert_close(denoise(entry, model, inputs), baseline, rtol=0, atol=0)
    finally:
        if counter:
            counter.remove()
        disable_spectrum(model)
    return forecast


@pytest.mark.parametrize("entry", SUPPORTED, ids=lambda e: e.cls)
def test_denoiser_under_spectrum(entry, poisoned_blanks):
    model, inputs = build(entry)
    check_schedules(entry, model, inputs)
    adapter = resolve_adapter(model)
    # Stand-ins only for single skipped blocks, each with its reason in adapters.STAND_INS; their fresh tensors
    # (poisoned with NaN) reach nothing, and nothing is kept between steps (the report of the PAPER run).
    assert bool(adapter.stand_in_modules) == (entry.cls in STAND_INS), "a single skipped block needs its STAND_INS reason"
    assert (poisoned_blanks[0] > 0) == bool(adapter.stand_in_modules)
    (branch,) = spectrum_summary(model).branches
    assert branch.forecast_steps and branch.stand_in_bytes == 0
    # Everything the forward runs before its first block (the input embedders, the time embedding) runs its own
    # forward on every call, forecast steps included.
    before = modules_before_the_blocks({entry.cls: model}, lambda: denoise(entry, model, inputs))
    assert before, f"{entry.cls} runs nothing before its blocks"
    with own_forward_runs({key: module for key, (module, _) in before.items()}) as counts:
        enable_spectrum(model, PAPER)
        try:
            denoise(entry, model, inputs)
        finally:
            disable_spectrum(model)
    assert {key: count[0] for key, count in counts.items()} == {key: n for key, (_, n) in before.items()}


@pytest.mark.parametrize("entry", REFUSED, ids=lambda e: e.cls)
def test_unsupported_denoiser_is_refused_with_the_reason(entry):
    model, inputs = build(entry)
    baseline = denoise(entry, model, inputs)
    with pytest.raises(UnsupportedModelError, match=entry.reason):
        enable_spectrum(model, PAPER)
    assert not spectrum_hooks(model)
    torch.testing.assert_close(denoise(entry, model, inputs), baseline, rtol=0, atol=0)
    # The refusal names the way that works: forecasting the whole output (every stream) instead.
    check_schedules(entry, model, inputs, {"forecast_output": True})


def test_wan_vace_forecasts_calls_with_control_and_skips_the_vace_blocks():
    entry = next(e for e in DENOISERS if e.cls == "WanVACETransformer3DModel")
    model, inputs = build(entry)
    vace = PassCounter(model, model.vace_blocks[0])
    try:
        denoise(entry, model, inputs)
        full = vace.take()
        enable_spectrum(model, PAPER)
        denoise(entry, model, inputs)
        assert vace.take() * STEPS == full * len(compute_steps(PAPER))
        (branch,) = spectrum_summary(model).branches
        assert branch.forecast_steps
    finally:
        vace.remove()
        disable_spectrum(model)


def test_table_covers_every_denoiser_class():
    """One entry per model class of diffusers.models.transformers and diffusers.models.unets, except the listed
    non-denoisers: a class diffusers adds must be added here."""
    import diffusers.models.transformers as transformers
    import diffusers.models.unets as unets

    classes = {name for module in (transformers, unets) for name, obj in vars(module).items()
               if inspect.isclass(obj) and issubclass(obj, torch.nn.Module)}
    listed = [e.cls for e in DENOISERS]
    assert len(listed) == len(set(listed))
    assert set(listed) == classes - set(NOT_DENOISERS)
    assert set(NOT_DENOISERS) <= classes


def test_qwen_image21_with_its_kv_cache():
    """QwenImage21Pipeline's default KV cache prefills at step 0 (the head sees the text and target tokens),
    later steps run the target's tokens only: the feature changes shape at step 1, and the forecasts come
    from the records of the new shape (steps 1 and 2, then the compute steps)."""
    from diffusers.models.transformers.transformer_qwenimage21 import QwenImage21KVCache

    entry = next(e for e in DENOISERS if e.cls == "QwenImage21Transformer2DModel")
    model, inputs = build(entry)
    x, rest = inputs["hidden_states"], {k: v for k, v in inputs.items() if k != "hidden_states"}
    cache = QwenImage21KVCache(len(model.transformer_blocks))
    enable_spectrum(model, PAPER)
    try:
        with torch.no_grad():
            for i in range(STEPS):  # as QwenImage21Pipeline calls it: prefill the prefix once, then the target only
                v = model(hidden_states=x, timestep=torch.full((2,), 1 - i / STEPS), kv_cache=cache,
                          kv_cache_mode="extract" if i == 0 else "cached", **rest)[0]
                x = x - v[:, -x.shape[1]:] / STEPS
        assert torch.isfinite(x).all()
        (branch,) = spectrum_summary(model).branches
        assert list(branch.computed_steps) == compute_steps(PAPER)
    finally:
        disable_spectrum(model)


def test_wan_animate2_reference_pass_then_cached_steps():
    """Wan-Animate 2's modular pipeline encodes each segment's driving video once (kv_cache_mode "extract", at
    the first timestep), then denoises against that KV cache: the reference pass lands on step 0, a compute
    step, so the cache is always filled, and the denoising calls follow the schedule."""
    from diffusers.models.transformers.transformer_wan_animate_2 import WanAnimate2KVCache

    entry = next(e for e in DENOISERS if e.cls == "WanAnimate2Transformer3DModel")
    model, inputs = build(entry)
    rest = {k: v for k, v in inputs.items() if k not in ("hidden_states", "kv_cache")}
    h, w, ref = 4, 6, 2

    @torch.no_grad()
    def two_segments():
        outs = []
        for segment in range(2):
            cache = WanAnimate2KVCache(2)
            model(hidden_states=[torch.randn(4, ref, h, w, generator=torch.Generator().manual_seed(segment))],
                  timestep=torch.tensor([1000.0]), encoder_hidden_states=rest["encoder_hidden_states"],
                  condition_latents=[torch.randn(6, ref, h, w, generator=torch.Generator().manual_seed(9))],
                  encoder_hidden_states_image=rest["encoder_hidden_states_image"], kv_cache=cache,
                  kv_cache_mode="extract", seq_len=ref * 6, offset_grid_sizes=torch.tensor([[ref, h // 2, w // 2]]))
            x = inputs["hidden_states"]
            for i in range(STEPS):
                v = model(hidden_states=x, timestep=torch.tensor([1000 * (1 - i / STEPS)]), kv_cache=cache, **rest)[0]
                x = [a - b / STEPS for a, b in zip(x, v)]
            outs.append(x[0])
        return torch.stack(outs)

    baseline = two_segments()
    try:
        enable_spectrum(model, EVERY_STEP)
        torch.testing.assert_close(two_segments(), baseline, rtol=0, atol=0)
        disable_spectrum(model)
        enable_spectrum(model, PAPER)
        forecast = two_segments()
        assert torch.isfinite(forecast).all() and not torch.equal(forecast, baseline)
        branches = spectrum_summary(model).branches
        computed = sorted(s for b in branches for s in b.computed_steps)
        assert sorted(set(computed)) == compute_steps(PAPER)  # the reference pass is one more call at step 0
        assert sum(len(b.forecast_steps) for b in branches) == STEPS - len(compute_steps(PAPER))
    finally:
        disable_spectrum(model)
