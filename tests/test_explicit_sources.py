"""Spectrum places calls from what diffusers passes and what the user declares, never from callers' frames, and
reads other libraries' private attributes only in its compatibility module."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from families import STEPS, flux
from helpers import latents
from spectrum_cache import SpectrumConfig, disable_spectrum, enable_spectrum, spectrum_summary
from spectrum_cache.schedule import compute_steps

REAL = SpectrumConfig(warmup_steps=3)

SRC = Path(__file__).resolve().parent.parent / "src" / "spectrum_cache"
# Frame access, by any route: sys._getframe, inspect's frame functions, a frame's or traceback's attributes.
FRAME_READS = re.compile(r"_getframe|currentframe|inspect\.stack|inspect\.trace|\.f_locals|\.f_back|\.f_globals"
                         r"|\.tb_frame")
# loading.py words an error message from the traceback of an import that failed; that is not placing a call.
FRAME_READS_ALLOWED = {"loading.py"}


def test_no_source_file_reads_callers_frames():
    found = [f"{path.relative_to(SRC)}:{number}: {line.strip()}"
             for path in SRC.rglob("*.py") if path.name not in FRAME_READS_ALLOWED
             for number, line in enumerate(path.read_text().splitlines(), 1) if FRAME_READS.search(line)]
    assert not found, found


def test_diffusers_private_attributes_are_read_only_in_compat():
    private = re.compile(r"\._(diffusers_hook|cache_config|parallel_config|denoising_end|input_predictions"
                         r"|count_prepared|progress_bar_config|is_cached|hf_hook|old_forward)\b|\"_(diffusers_hook|"
                         r"cache_config|parallel_config|denoising_end|input_predictions|count_prepared)\"")
    found = [f"{path.relative_to(SRC)}:{number}" for path in (SRC / "integrations").glob("*.py")
             if path.name != "compat.py"
             for number, line in enumerate(path.read_text().splitlines(), 1) if private.search(line)]
    assert not found, found


@torch.no_grad()
def test_placement_works_with_frame_inspection_unavailable(monkeypatch):
    """The whole call path runs with sys._getframe broken: nothing in it walks frames."""
    import sys

    pipe, kwargs = flux()
    enable_spectrum(pipe, REAL)
    expected = latents(pipe, kwargs)
    real = sys._getframe

    def no_frames(depth=0):
        for frame in (real(1), real(2)):
            if "spectrum_cache" in frame.f_code.co_filename:
                raise AssertionError(f"{frame.f_code.co_filename} read a frame")
        return real(depth + 1)

    monkeypatch.setattr(sys, "_getframe", no_frames)
    out = latents(pipe, kwargs)
    monkeypatch.undo()
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    assert list(spectrum_summary(pipe).branches[0].computed_steps) == compute_steps(REAL, STEPS)


def test_the_scheduler_is_watched_while_enabled_and_left_as_it_was():
    pipe, kwargs = flux()
    scheduler = pipe.scheduler
    assert "set_timesteps" not in vars(scheduler)
    enable_spectrum(pipe, REAL)
    assert "set_timesteps" in vars(scheduler)
    # What a pipeline asks of set_timesteps (its arguments) is the scheduler's own.
    import inspect

    assert "sigmas" in inspect.signature(scheduler.set_timesteps).parameters
    import copy

    clone = copy.deepcopy(scheduler)  # a copy has the plain method
    assert not hasattr(vars(clone).get("set_timesteps"), "_listeners")
    clone.set_timesteps(7)
    assert len(clone.timesteps) == 7 and len(scheduler.timesteps) != 7
    disable_spectrum(pipe)
    assert "set_timesteps" not in vars(scheduler)


def test_a_scheduler_swapped_in_after_enabling_is_followed():
    from diffusers import FlowMatchEulerDiscreteScheduler

    pipe, kwargs = flux()
    enable_spectrum(pipe, REAL)
    latents(pipe, kwargs)
    pipe.scheduler = FlowMatchEulerDiscreteScheduler.from_config(pipe.scheduler.config)
    for steps in (9, 14):  # the first run's set_timesteps was not seen; the second's is
        latents(pipe, kwargs, num_inference_steps=steps)
        (branch,) = spectrum_summary(pipe).branches
        assert branch.num_inference_steps == steps and list(branch.computed_steps) == compute_steps(REAL, steps)


def test_enabling_the_same_pipeline_twice_is_refused_but_a_sibling_joins():
    from diffusers import FluxPipeline

    pipe, kwargs = flux()
    enable_spectrum(pipe, REAL)
    with pytest.raises(ValueError, match="already enabled"):
        enable_spectrum(pipe, REAL)
    sibling = FluxPipeline.from_pipe(pipe)
    enable_spectrum(sibling, REAL.replace())  # an equal config
    latents(sibling, kwargs, num_inference_steps=10)
    assert spectrum_summary(sibling).branches[0].num_inference_steps == 10
    assert spectrum_summary(pipe).branches[0].num_inference_steps == 10  # one scheduler: one generation


def test_a_watch_whose_denoiser_is_gone_removes_itself():
    import gc

    from spectrum_cache.integrations import runs

    pipe, kwargs = flux()
    scheduler = pipe.scheduler
    enable_spectrum(pipe, REAL)
    latents(pipe, kwargs)
    pipe.transformer = None  # the denoiser, its hook and its generations go, without disable_spectrum
    gc.collect()
    assert isinstance(vars(scheduler).get("set_timesteps"), runs.RunWatch)
    scheduler.set_timesteps(5)  # the scheduler still works, and drops the watch nobody listens to
    assert len(scheduler.timesteps) == 5 and "set_timesteps" not in vars(scheduler)


def test_a_sibling_before_the_enabled_pipeline_ever_ran_is_told_how_to_be_placed():
    """The enabled pipeline's scheduler was never set, and the sibling's own run is not seen: its calls run the
    network, and the warning names the way to have them placed."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline

    from helpers import block_passes
    from spectrum_cache import SpectrumWarning

    pipe, kwargs = flux()
    sibling = FluxPipeline.from_pipe(pipe, scheduler=FlowMatchEulerDiscreteScheduler.from_config(pipe.scheduler.config))
    enable_spectrum(pipe, REAL)
    passes = block_passes(pipe.transformer)
    with pytest.warns(SpectrumWarning, match=r"no set_timesteps\(\) call.*enable_spectrum\(sibling\)"):
        latents(sibling, kwargs)
    assert passes[0] == STEPS
