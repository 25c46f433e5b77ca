"""spectrum_cache.recording: the features a tiny FLUX pipeline's compute steps record, on the calling thread, for
the length of the block."""

from __future__ import annotations

import threading

import pytest
import torch

from families import flux
from spectrum_cache import SpectrumConfig, enable_spectrum, recording, spectrum_summary
from spectrum_cache.integrations import Recording


def _head_inputs(pipe) -> list[torch.Tensor]:
    """The output head's input at each denoiser call (FLUX's norm_out; one call per step without true CFG)."""
    seen: list[torch.Tensor] = []
    pipe.transformer.norm_out.register_forward_pre_hook(lambda module, args: seen.append(args[0].clone()))
    return seen


def test_recording_holds_each_compute_steps_feature_per_branch():
    pipe, kwargs = flux()
    enable_spectrum(pipe, SpectrumConfig(warmup_steps=3))
    heads = _head_inputs(pipe)
    with recording(pipe) as recorded:
        pipe(**kwargs)
    assert isinstance(recorded, Recording)
    run = recorded.run()
    assert run is recorded.run("transformer") and run.denoiser == "transformer"
    summary = spectrum_summary(pipe)
    assert run.num_steps == kwargs["num_inference_steps"] == len(heads)
    # The steps recorded are the steps computed, per branch; forecast steps record nothing.
    assert {branch: sorted(by_step) for branch, by_step in run.features.items()} == {
        b.branch: list(b.computed_steps) for b in summary.branches}
    assert all(b.forecast_steps for b in summary.branches)
    for by_step in run.features.values():
        for step, feature in by_step.items():  # the head's input, copied to the host
            assert feature.shape == heads[step].shape and feature.device.type == "cpu"
            assert torch.equal(feature, heads[step])


def test_nothing_is_recorded_outside_the_block_or_from_another_thread():
    pipe, kwargs = flux()
    enable_spectrum(pipe, SpectrumConfig(warmup_steps=3))
    pipe(**kwargs)  # before the block
    with recording(pipe, keep=lambda feature: feature.shape) as recorded:
        outputs = []
        other = threading.Thread(target=lambda: outputs.append(pipe(**kwargs)))
        other.start()
        other.join()
        assert len(outputs) == 1 and spectrum_summary(pipe).branches[0].computed_steps  # it ran, with Spectrum
        assert recorded.runs == []  # the other thread's run is not this thread's
        pipe(**kwargs)
    steps = {branch: sorted(by_step) for branch, by_step in recorded.run().features.items()}
    assert all(isinstance(shape, torch.Size) for by_step in recorded.run().features.values() for shape in by_step.values())
    pipe(**kwargs)  # after the block
    assert len(recorded.runs) == 1
    assert {branch: sorted(by_step) for branch, by_step in recorded.run().features.items()} == steps


def test_recording_needs_spectrum_enabled_and_names_a_missing_run():
    pipe, kwargs = flux()
    with pytest.raises(ValueError, match="Spectrum is not enabled on FluxPipeline"):
        with recording(pipe):
            pass
    enable_spectrum(pipe, SpectrumConfig(warmup_steps=3))
    with recording(pipe) as recorded:
        pass
    with pytest.raises(ValueError, match="holds 0 runs of transformer"):
        recorded.run("transformer")
