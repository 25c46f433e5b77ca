"""Spectrum refuses to share a denoiser with another cache, in either order: cache-dit 1.5.3 (on the pipeline
or the transformer), diffusers' caches (enable_cache, or their apply_* functions), and any ModelHook cache."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from diffusers.hooks import FirstBlockCacheConfig, HookRegistry, ModelHook, apply_first_block_cache

from families import flux
from spectrum_cache import SpectrumConfig, enable_spectrum

cache_dit = pytest.importorskip("cache_dit", reason="cache-dit is not installed (pip install -e \".[peers]\")")

REAL = SpectrumConfig(warmup_steps=3)


@pytest.fixture
def cache_dit_on():
    """Enables cache-dit on a pipeline or transformer, and disables it after the test: on a pipeline it
    patches the class's __call__ (every FluxPipeline) until disable_cache."""
    cached: list[Any] = []

    def enable(target: Any) -> None:
        # Fn=1, Bn=0: cache-dit's default Fn=8 asserts on a model of 3 blocks.
        cache_dit.enable_cache(target, cache_config=cache_dit.DBCacheConfig(Fn_compute_blocks=1, Bn_compute_blocks=0))
        cached.append(target)

    yield enable
    for target in cached:
        cache_dit.disable_cache(target)


@pytest.fixture
def flux_pipe():
    pipe, kwargs = flux()
    pipe.set_progress_bar_config(disable=True)
    return pipe, kwargs


class _LastStepCache(ModelHook):
    """A third-party cache built on diffusers' ModelHook: it returns the block's last output on every call
    after the first."""

    def __init__(self) -> None:
        super().__init__()
        self.last = None

    def new_forward(self, module: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        if self.last is None:
            self.last = self.fn_ref.original_forward(*args, **kwargs)
        return self.last


def _third_party_cache(pipe: Any) -> None:
    block = pipe.transformer.single_transformer_blocks[0]
    HookRegistry.check_if_exists_or_initialize(block).register_hook(_LastStepCache(), "last_step_cache")


def _diffusers_fbc(pipe: Any) -> None:
    apply_first_block_cache(pipe.transformer, FirstBlockCacheConfig(threshold=0.1))


@pytest.mark.parametrize("on", ["pipeline", "transformer"])
def test_spectrum_on_a_cache_dit_transformer_is_refused_naming_both(flux_pipe, cache_dit_on, on: str) -> None:
    pipe, _ = flux_pipe
    cache_dit_on(pipe if on == "pipeline" else pipe.transformer)
    with pytest.raises(ValueError, match=r"FluxTransformer2DModel is already held by another cache, cache-dit "
                       r"\(cache_dit.enable_cache.*Spectrum cannot be stacked"):
        enable_spectrum(pipe, REAL)
    registry = getattr(pipe.transformer, "_diffusers_hook", None)
    assert registry is None or not registry.hooks  # nothing of Spectrum's left behind


@pytest.mark.parametrize("on", ["pipeline", "transformer"])
def test_cache_dit_after_spectrum_fails_at_the_next_call_naming_both(flux_pipe, cache_dit_on, on: str) -> None:
    pipe, kwargs = flux_pipe
    enable_spectrum(pipe, REAL)
    cache_dit_on(pipe if on == "pipeline" else pipe.transformer)
    # Before: the call ran cache-dit alone and spectrum_summary said "no denoising steps run yet".
    with pytest.raises(RuntimeError, match=r"FluxTransformer2DModel has Spectrum enabled and another cache on top "
                       r"of it, cache-dit .*Spectrum would never run"):
        pipe(**kwargs)


@pytest.mark.parametrize("stack", [_diffusers_fbc, _third_party_cache], ids=["diffusers-fbc", "third-party-hook"])
def test_a_modelhook_cache_in_either_order_is_refused(stack, flux_pipe) -> None:
    pipe, kwargs = flux_pipe
    stack(pipe)
    with pytest.raises(ValueError, match="already held by another cache, the hook '(fbc_leader_block_hook|"
                       "last_step_cache)'"):
        enable_spectrum(pipe, REAL)

    pipe, kwargs = flux()
    pipe.set_progress_bar_config(disable=True)
    enable_spectrum(pipe, REAL)
    stack(pipe)
    with pytest.raises(RuntimeError, match="has Spectrum enabled and another cache on top of it, the hook"):
        pipe(**kwargs)


def test_hooks_that_are_not_caches_still_stack(flux_pipe) -> None:
    """Layerwise casting is a ModelHook on every layer; it is no cache, and Spectrum runs beside it."""
    pipe, kwargs = flux_pipe
    pipe.transformer.enable_layerwise_casting(storage_dtype=torch.bfloat16, compute_dtype=torch.float32)
    enable_spectrum(pipe, REAL)
    pipe(**kwargs)
