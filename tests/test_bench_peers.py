"""The bench's peers: cache-dit's DBCache (alone, TaylorSeer, FoCa, DMD) on the embedded pipeline, which
cache-dit does not know; names, pass counts, CFG pairing, clean switch-off, one-line reasons."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from spectrum_cache import SpectrumConfig, compute_steps
from spectrum_cache.bench.measure import PassCounter
from spectrum_cache.bench.methods import UnsupportedMethod, applied, default_methods, parse_method, parse_methods
from spectrum_cache.bench.peers import CALIBRATORS, INSTALL_HINT, CacheDitSettings

cache_dit = pytest.importorskip("cache_dit", reason=f"cache-dit is not installed ({INSTALL_HINT})")

STEPS = 12
# Spectrum's schedules at 12 steps, which the aALPHA masks copy: 8 and 7 passes.
A075 = compute_steps(SpectrumConfig(flex_window=0.75), STEPS)
A3 = compute_steps(SpectrumConfig(flex_window=3.0), STEPS)
PROMPT = "a red circle left of a blue square"


@pytest.fixture(scope="module")
def pipe():
    from spectrum_cache.embedded import load_pipeline

    pipe = load_pipeline()
    pipe.set_progress_bar_config(disable=True)
    pipe.children_order = {name: list(m._modules) for name, m in pipe.transformer.named_modules()}
    return pipe


def _generate(pipe, guidance_scale: float = 4.0, steps: int = STEPS) -> np.ndarray:
    generator = torch.Generator("cpu").manual_seed(3)
    return pipe(PROMPT, num_inference_steps=steps, guidance_scale=guidance_scale, generator=generator, output_type="np").images[0]


@pytest.fixture(scope="module")
def full(pipe) -> np.ndarray:
    return _generate(pipe)


class BlockCalls:
    """Real calls of each transformer block (a forward hook on the block fires only when it runs)."""

    def __init__(self, transformer: torch.nn.Module) -> None:
        self.blocks = [*transformer.transformer_blocks, *transformer.single_transformer_blocks]
        self.calls = [0] * len(self.blocks)
        self.handles = []

    def __enter__(self) -> BlockCalls:
        for i, block in enumerate(self.blocks):
            self.handles.append(block.register_forward_hook(lambda *_, i=i: self.calls.__setitem__(i, self.calls[i] + 1)))
        return self

    def __exit__(self, *_: object) -> None:
        for handle in self.handles:
            handle.remove()


def _run(pipe, name: str, guidance_scale: float = 4.0, configured: float | None = None):
    method = parse_method(name)
    with applied(pipe, method, STEPS, guidance_scale=configured if configured is not None else guidance_scale), \
            PassCounter(pipe.transformer) as counter, BlockCalls(pipe.transformer) as blocks:
        image = _generate(pipe, guidance_scale)
    return image, counter, blocks


def _assert_left_clean(pipe, full: np.ndarray | None = None) -> None:
    from spectrum_cache.embedded import EmbeddedPipeline

    assert "forward" not in vars(pipe.transformer) and not hasattr(pipe.transformer, "_is_patched")
    assert not hasattr(EmbeddedPipeline, "_original_call") and not hasattr(pipe, "_context_manager")
    # cache-dit's forward re-adds the block lists at the end of the children: the bench puts the order back
    # (diffusers' First Block Cache and the bench's pass counter take the first and last block from it).
    assert {name: list(m._modules) for name, m in pipe.transformer.named_modules()} == pipe.children_order
    if full is not None:
        assert np.array_equal(_generate(pipe), full)  # switched off: exactly the full sampler again


def test_names_round_trip() -> None:
    for name in ("cachedit-dbcache-a0.75", "cachedit-taylorseer-a3.0", "cachedit-foca-ultra", "cachedit-dmd-slow",
                 "cachedit-dbcache-t0.12", "cachedit-taylorseer-a0.75-f2b1"):
        method = parse_method(name)
        assert method.name == name and method.kind == "cachedit" and parse_method(method.name) == method
    assert parse_method("cachedit-taylorseer-a3").name == "cachedit-taylorseer-a3.0"
    assert parse_method("cachedit-dmd-t.1-f1b0").name == "cachedit-dmd-t0.1"  # f1b0 is the default
    assert parse_method("cachedit-foca-a0.75").peer == CacheDitSettings("foca", alpha=0.75, fn=1, bn=0)
    for bad in ("cachedit-dbcache", "cachedit-nope-a0.75", "cachedit-dbcache-a0.75-f0b0", "cachedit-dbcache-t0",
                "cachedit-dbcache-turbo", "diffusers-fbc-t0.1-s3", "diffusers-mag-r1.5"):
        with pytest.raises(ValueError):
            parse_method(bad)
    mag = parse_method("diffusers-mag-t0.3-s12-r0.1")
    assert (mag.cache_value, mag.mag_max_skip, mag.mag_retention, mag.name) == (0.3, 12, 0.1, "diffusers-mag-t0.3-s12-r0.1")
    # Passes known in advance: the a-masks are Spectrum's schedules; cache-dit's presets are its own masks.
    assert parse_method("cachedit-dmd-a0.75").expected_passes(50) == 14
    assert parse_method("cachedit-dbcache-a3.0").expected_passes(50) == 10
    ultra = cache_dit.steps_mask(total_steps=50, mask_policy="ultra")
    assert parse_method("cachedit-dbcache-ultra").expected_passes(50) == sum(ultra) == 14
    assert parse_method("cachedit-dbcache-t0.1").expected_passes(50) is None
    names = [m.name for m in default_methods(50)]
    assert {f"cachedit-{c}-a{a}" for c in CALIBRATORS for a in (0.75, 3.0)} <= set(names)
    assert {"diffusers-taylorseer-i7", "diffusers-fbc-t0.15", "diffusers-fbc-t0.22", "diffusers-mag-t0.3-s12-r0.1"} <= set(names)
    assert parse_method("diffusers-taylorseer-i7").expected_passes(50) == 10
    assert [m.name for m in parse_methods("cachedit-dmd-a3,full", 50)] == ["full", "cachedit-dmd-a3.0"]


def test_each_calibrator_runs_on_the_schedule_and_switches_off(pipe, full: np.ndarray) -> None:
    images = {}
    for calibrator in CALIBRATORS:
        for alpha, schedule in ((0.75, A075), (3.0, A3)):
            name = f"cachedit-{calibrator}-a{alpha}"
            image, counter, blocks = _run(pipe, name)
            # Real CFG: two transformer calls a step, each branch computing exactly the schedule's steps.
            assert counter.calls == 2 * STEPS
            assert counter.passes(STEPS) == len(schedule) == parse_method(name).expected_passes(STEPS)
            # Fn=1: the first block runs on every call, every other block only on computed steps.
            assert blocks.calls == [2 * STEPS] + [2 * len(schedule)] * 5
            assert np.abs(image - full).max() > 1e-3  # cached steps change the result
            images[name] = image
            _assert_left_clean(pipe)
    _assert_left_clean(pipe, full)
    # Other caches still find the right blocks afterwards.
    from spectrum_cache.bench.measure import probe_module

    assert any(probe_module(pipe.transformer) is m for m in pipe.transformer.single_transformer_blocks[-1].modules())
    _, counter, _ = _run(pipe, "diffusers-fbc-t0.2")
    assert 0 < counter.passes(STEPS) < STEPS
    # The calibrators really forecast: each gives its own image on the same schedule.
    for alpha in (0.75, 3.0):
        outs = [images[f"cachedit-{c}-a{alpha}"] for c in CALIBRATORS]
        assert all(not np.array_equal(a, b) for i, a in enumerate(outs) for b in outs[i + 1:])


def test_presets_thresholds_and_guidance_1(pipe, full: np.ndarray) -> None:
    mask = cache_dit.steps_mask(total_steps=STEPS, mask_policy="fast")
    _, counter, _ = _run(pipe, "cachedit-taylorseer-fast")
    assert counter.passes(STEPS) == sum(mask) < STEPS
    # A threshold: cache-dit's 8 warm-up steps compute, a huge threshold caches every step after them.
    _, counter, _ = _run(pipe, "cachedit-dbcache-t10")
    assert counter.passes(STEPS) == 8
    # Bn=1: the last block runs on every call too (so the pass counter sees every step).
    _, _, blocks = _run(pipe, "cachedit-dbcache-a3.0-f1b1")
    assert blocks.calls == [2 * STEPS] + [2 * len(A3)] * 4 + [2 * STEPS]
    # Guidance 1: one call a step, no CFG pairing.
    image, counter, _ = _run(pipe, "cachedit-dmd-a0.75", guidance_scale=1.0)
    assert counter.calls == STEPS and counter.passes(STEPS) == len(A075)
    assert not np.array_equal(image, _generate(pipe, 1.0))
    _assert_left_clean(pipe, full)


def test_cfg_pairing_that_does_not_match_is_refused(pipe, full: np.ndarray) -> None:
    """Told guidance 1 (one call a step) while the pipeline runs CFG: cache-dit's step count gives it away."""
    with pytest.raises(UnsupportedMethod, match=f"cache-dit counted .* steps of {STEPS} with enable_separate_cfg=False"):
        _run(pipe, "cachedit-dbcache-a0.75", guidance_scale=4.0, configured=1.0)
    with pytest.raises(UnsupportedMethod, match=f"cache-dit counted 6 steps of {STEPS} with enable_separate_cfg=True"):
        _run(pipe, "cachedit-dbcache-a0.75", guidance_scale=1.0, configured=4.0)
    _assert_left_clean(pipe, full)


def test_what_cannot_run_says_why_in_one_line(pipe, full: np.ndarray, monkeypatch: pytest.MonkeyPatch) -> None:
    from diffusers import DiffusionPipeline

    def reason(target, name: str) -> str:
        with pytest.raises(UnsupportedMethod) as error:
            with applied(target, parse_method(name), STEPS):
                raise AssertionError("must not run")
        assert "\n" not in str(error.value)
        return str(error.value)

    # cache-dit's default Fn=8 is more than the embedded model's 6 blocks; any Fn+Bn >= 6 leaves nothing to cache.
    assert "Fn=5 + Bn=1" in reason(pipe, "cachedit-dbcache-a0.75-f5b1")

    class ToyTransformer(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.blocks = torch.nn.ModuleList([torch.nn.Linear(2, 2)])

    class ToyPipeline(DiffusionPipeline):
        def __init__(self, transformer: torch.nn.Module) -> None:
            super().__init__()
            self.register_modules(transformer=transformer)

    assert "no block adapter for ToyPipeline or ToyTransformer" in reason(ToyPipeline(ToyTransformer()), "cachedit-dbcache-a0.75")
    monkeypatch.setitem(sys.modules, "cache_dit", None)  # as if not installed
    assert INSTALL_HINT in reason(pipe, "cachedit-taylorseer-a3.0")
    monkeypatch.undo()
    _assert_left_clean(pipe, full)


def test_bench_runs_them_and_notes_what_it_skips(tmp_path: Path) -> None:
    from spectrum_cache.cli import main

    out = tmp_path / "results"
    methods = "full,cachedit-taylorseer-a0.75,cachedit-dbcache-a0.75-f6b0"
    args = ["bench", "--steps", "8", "--num-prompts", "1", "--methods", methods, "--guidance-scale", "1",
            "--extra-metrics", "off", "--device", "cpu", "--out", str(out)]
    assert main(args) == 0
    records = {r["method"]: r for r in (json.loads(p.read_text()) for p in (out / "records").glob("*.json"))}
    done = records["cachedit-taylorseer-a0.75"]
    assert done["status"] == "done" and done["passes"] == done["expected_passes"] == 6 and done["denoiser_calls"] == 8
    assert done["psnr"] is not None
    skipped = records["cachedit-dbcache-a0.75-f6b0"]
    assert skipped["status"] == "skipped" and "Fn=6" in skipped["note"]
    assert "cachedit-dbcache-a0.75-f6b0: skipped (cache-dit Fn=6" in (out / "table.md").read_text()
