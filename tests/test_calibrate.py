"""Explicit schedules (SpectrumConfig.compute_steps), their save/load with provenance, calibrate() on tiny
real pipelines, and the shadow error in spectrum_summary."""

from __future__ import annotations

import json
import warnings

import pytest
import torch

from spectrum_cache import SpectrumConfig, calibrate, compute_steps, disable_spectrum, enable_spectrum, spectrum_summary
from spectrum_cache.forecast import make_forecaster
from spectrum_cache.integrations import SpectrumWarning
from spectrum_cache.integrations.calibrate import paper_schedule
from families import flux, wan21
from helpers import flux_cfg


# -- explicit schedules ---------------------------------------------------------------------------
def test_an_explicit_schedule_is_what_compute_steps_returns():
    config = SpectrumConfig(num_inference_steps=12, compute_steps=[7, 0, 1, 3])
    assert config.compute_steps == (0, 1, 3, 7)
    assert compute_steps(config) == [0, 1, 3, 7] == compute_steps(config, 12)


@pytest.mark.parametrize("fields,message", [
    (dict(compute_steps=(0, 1)), "set num_inference_steps"),
    (dict(num_inference_steps=5, compute_steps=(0, 5)), r"compute_steps entry must be an integer in \[0, 4\]"),
    (dict(num_inference_steps=5, compute_steps=(0, -1)), "compute_steps entry"),
    (dict(num_inference_steps=5, compute_steps=(0, 2, 2)), r"lists steps \[2\] more than once"),
    (dict(num_inference_steps=5, compute_steps=(1, 2)), "must include step 0"),
    (dict(num_inference_steps=5, compute_steps="012"), "sequence of step indices"),
    (dict(num_inference_steps=5, compute_steps=(0, 1.5)), "compute_steps entry"),
])
def test_bad_schedules_are_refused_by_name(fields, message):
    with pytest.raises(ValueError, match=message):
        SpectrumConfig(**fields)


def test_a_schedule_for_another_step_count_is_refused():
    config = SpectrumConfig(num_inference_steps=12, compute_steps=(0, 1, 4))
    with pytest.raises(ValueError, match="planned for 12 steps, and the run has 10"):
        compute_steps(config, 10)


def test_a_pipeline_run_of_another_step_count_refuses_the_schedule_and_recovers():
    pipe, kwargs = flux()
    enable_spectrum(pipe, SpectrumConfig(num_inference_steps=12, compute_steps=(0, 1, 2, 5, 9)))
    with pytest.raises(ValueError, match="planned for 12 steps, and the run has 8"):
        pipe(**{**kwargs, "num_inference_steps": 8})
    pipe(**kwargs)  # the refusal left nothing behind: the right step count runs the plan
    assert spectrum_summary(pipe).branches[0].computed_steps == (0, 1, 2, 5, 9)


def test_an_explicit_schedule_runs_exactly_its_steps_on_every_branch():
    pipe, kwargs = wan21()
    schedule = (0, 2, 3, 7, 11)
    enable_spectrum(pipe, SpectrumConfig(num_inference_steps=12, compute_steps=schedule))
    pipe(**kwargs)
    branches = spectrum_summary(pipe).branches
    assert {b.branch for b in branches} == {"cond", "uncond"}
    assert all(b.computed_steps == schedule and b.num_inference_steps == 12 for b in branches)


# -- save / load ------------------------------------------------------------------------------------
def test_save_and_load_round_trip_with_provenance(tmp_path):
    config = SpectrumConfig(num_inference_steps=20, compute_steps=(0, 1, 5, 12), blend_weight=0.75, history=5,
                            provenance={"pipeline": "FluxPipeline", "passes": 4, "candidates": [{"psnr": [1.5]}]})
    path = tmp_path / "schedule.json"
    config.save(path)
    loaded = SpectrumConfig.load(path)
    assert loaded == config and loaded.provenance == config.provenance
    assert json.loads(path.read_text())["spectrum_config"]["compute_steps"] == [0, 1, 5, 12]
    plain = SpectrumConfig(flex_window=3.0)
    plain.save(path)
    assert SpectrumConfig.load(path) == plain


@pytest.mark.parametrize("text,message", [
    ("not json", "not JSON"),
    ('{"a": 1}', "no 'spectrum_config' entry"),
    ('{"format": 99, "spectrum_config": {}}', "format 99"),
    ('{"format": 1, "spectrum_config": {"speed": 3}}', r"unknown SpectrumConfig fields \['speed'\]"),
    ('{"format": 1, "spectrum_config": {"num_inference_steps": 4, "compute_steps": [1]}}', "must include step 0"),
])
def test_load_refuses_what_is_not_a_schedule_file(tmp_path, text, message):
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        SpectrumConfig.load(path)


def _calibrated(pipe, kwargs, **fields):
    from spectrum_cache.integrations.provenance import describe

    provenance = describe(pipe, [("transformer", pipe.transformer)])
    return SpectrumConfig(num_inference_steps=kwargs["num_inference_steps"], compute_steps=(0, 1, 2, 6),
                          provenance=provenance, **fields)


def test_enable_warns_when_the_model_is_not_the_one_calibrated_on():
    pipe, kwargs = flux()
    config = _calibrated(pipe, kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("error", SpectrumWarning)
        enable_spectrum(pipe, config)  # the same model: no warning
    disable_spectrum(pipe)
    other, _ = wan21()
    with pytest.warns(SpectrumWarning, match="calibrated on another model: its transformer is a WanTransformer3DModel"):
        enable_spectrum(other, config)
    disable_spectrum(other)
    from diffusers import FlowMatchEulerDiscreteScheduler

    pipe.scheduler = FlowMatchEulerDiscreteScheduler(shift=2.0)
    with pytest.warns(SpectrumWarning, match="its scheduler .* has another config"):
        enable_spectrum(pipe, config)


# -- shadow error -------------------------------------------------------------------------------------
def test_shadow_error_is_the_forecast_error_on_each_compute_step_after_the_warm_up():
    pipe, kwargs = flux()
    config = SpectrumConfig(num_inference_steps=12, compute_steps=(0, 1, 2, 4, 7, 10), blend_weight=0.75)
    heads: list[torch.Tensor] = []
    pipe.transformer.norm_out.register_forward_pre_hook(lambda module, args: heads.append(args[0].clone()))
    enable_spectrum(pipe, config)
    pipe(**kwargs)
    (branch,) = spectrum_summary(pipe).branches
    assert [step for step, _ in branch.shadow_errors] == [4, 7, 10]  # compute steps after the first forecast
    # Replay: the same forecaster fed the features the network made on the compute steps.
    forecaster = make_forecaster("chebyshev", 12, 4, 0.1, 0.75, history=config.history)
    expected = []
    for step, feature in zip(range(12), heads):
        if step in config.compute_steps:
            if step > 3:
                forecast = forecaster.predict(step)
                expected.append(float((forecast - feature).norm() / feature.norm()))
            forecaster.update(step, feature)
    assert [error for _, error in branch.shadow_errors] == pytest.approx(expected, rel=1e-4)
    assert all(error > 0 for error in expected)
    assert "shadow error" in str(spectrum_summary(pipe))


def test_no_shadow_error_without_forecast_steps():
    pipe, kwargs = flux()
    enable_spectrum(pipe, SpectrumConfig(warmup_steps=12))
    pipe(**kwargs)
    assert spectrum_summary(pipe).branches[0].shadow_errors == ()


# -- calibrate ------------------------------------------------------------------------------------------
def test_paper_schedule_prefers_the_papers_alphas():
    assert paper_schedule(50, 14) == [0, 1, 2, 3, 4, 6, 8, 11, 15, 20, 25, 31, 38, 46]
    assert paper_schedule(50, 10) == [0, 1, 2, 3, 4, 6, 11, 19, 30, 44]
    assert len(paper_schedule(50, 12)) == 12
    assert paper_schedule(4, 2) is None  # the warm-up alone runs 4


@pytest.mark.parametrize("guidance_forecast", ["independent", "paired"])
def test_calibrate_flux_with_true_cfg(guidance_forecast):
    pipe, kwargs, prompts = flux_cfg()
    base = SpectrumConfig(guidance_forecast=guidance_forecast)
    config = calibrate(pipe, prompts, passes=6, num_inference_steps=12, config=base, progress=False,
                       blend_weights=(0.5, 1.0), **kwargs)
    assert len(config.compute_steps) == 6 and config.compute_steps[0] == 0
    assert config.num_inference_steps == 12 and config.guidance_forecast == guidance_forecast
    record = config.provenance
    assert record["pipeline"] == "FluxPipeline" and record["calibration_prompts"] == 2
    assert record["denoisers"]["transformer"]["class"] == "FluxTransformer2DModel"
    assert record["true_cfg_scale"] == 3.0 and record["guidance_scale"] == 3.5 and record["passes"] == 6
    assert record["mean_psnr"] >= record["paper_mean_psnr"]  # the paper's schedule is a candidate
    assert {c["kind"] for c in record["candidates"]} == {"planned", "paper"}
    assert {c["fit"] for c in record["candidates"]} == {"as configured", "local"}
    # The winner's settings are its fit's: the local fit sets history, degree and lambda.
    winner = max(record["candidates"], key=lambda c: c["mean_psnr"])
    assert (config.history == 3) == (winner["fit"] == "local") and record["fit"] == winner["fit"]
    # Cost: 2 full runs of 12 steps x 2 branches, then every candidate at 6 passes per branch.
    assert record["cost"]["network_passes"] == 2 * 24 + len(record["candidates"]) * 2 * 12
    assert record["cost"]["seconds"] > 0
    # Nothing is left on the pipeline; the config runs exactly its steps.
    assert spectrum_summary(pipe).enabled is False
    enable_spectrum(pipe, config)
    pipe(**kwargs, **prompts[0], num_inference_steps=12)
    assert {b.computed_steps for b in spectrum_summary(pipe).branches} == {config.compute_steps}


def test_calibrate_wan_with_cfg_is_deterministic_and_round_trips(tmp_path):
    results = []
    for _ in range(2):
        pipe, kwargs = wan21()
        kwargs.pop("num_inference_steps")
        embeds = kwargs.pop("prompt_embeds")
        prompts = [{"prompt_embeds": embeds}, {"prompt_embeds": embeds.flip(1)}]
        results.append(calibrate(pipe, prompts, passes=5, num_inference_steps=12, seed=3, progress=False, **kwargs))
    first, second = results
    assert first == second and len(first.compute_steps) == 5
    assert first.provenance["candidates"] == second.provenance["candidates"]
    first.save(tmp_path / "wan.json")
    loaded = SpectrumConfig.load(tmp_path / "wan.json")
    assert loaded == first and loaded.provenance["pipeline"] == "WanPipeline"
    with warnings.catch_warnings():
        warnings.simplefilter("error", SpectrumWarning)
        enable_spectrum(pipe, loaded)


def test_calibrate_hides_the_pipelines_bars_and_puts_its_settings_back(capsys):
    pipe, kwargs, prompts = flux_cfg()
    pipe.set_progress_bar_config(desc="mine", leave=False)
    seen = []
    draw = pipe.progress_bar

    def spy(*args, **kw):
        seen.append(dict(pipe._progress_bar_config))
        return draw(*args, **kw)

    pipe.progress_bar = spy
    calibrate(pipe, prompts[:1], passes=6, num_inference_steps=12, blend_weights=(0.5,), fits=None, progress=False,
              **kwargs)
    assert seen and all(config == {"disable": True} for config in seen)
    assert "it/s" not in capsys.readouterr().err  # no bar drawn at all
    assert pipe._progress_bar_config == {"desc": "mine", "leave": False}
    # A pipeline that had no settings has none after (diffusers' default applies again).
    fresh, kwargs, prompts = flux_cfg()
    calibrate(fresh, prompts[:1], passes=6, num_inference_steps=12, blend_weights=(0.5,), fits=None, progress=False,
              **kwargs)
    assert "_progress_bar_config" not in vars(fresh)


def test_calibrate_shows_one_bar_with_a_total(monkeypatch):
    import spectrum_cache.integrations.calibrate as module

    bars = []

    class Recorded(module.tqdm):
        def __init__(self, *args, **kw):
            super().__init__(*args, **kw)
            bars.append(self)

    monkeypatch.setattr(module, "tqdm", Recorded)
    pipe, kwargs, prompts = flux_cfg()
    config = calibrate(pipe, prompts, passes=6, num_inference_steps=12, blend_weights=(0.5, 1.0), **kwargs)
    candidates = len(config.provenance["candidates"])
    assert len(bars) == 1
    # Before the search the total is the most candidates there can be (paper at 1 + 2 w, 2 fits x 3 mixes).
    assert bars[0].total == len(prompts) * (1 + candidates) and bars[0].n == bars[0].total
    cost = config.provenance["cost"]
    assert all(cost[f"{phase}_seconds"] > 0 for phase in ("record", "search", "check"))
    assert cost["record_seconds"] + cost["search_seconds"] + cost["check_seconds"] <= cost["seconds"]


def test_calibrate_rewinds_a_given_generator():
    pipe, kwargs, prompts = flux_cfg()
    generator = torch.Generator().manual_seed(7)
    config = calibrate(pipe, prompts[:1], passes=12, num_inference_steps=12, generator=generator,
                       blend_weights=None, progress=False, **kwargs)
    # Every step computes: Spectrum's output is the full run's, so the same noise gives an identical output.
    assert all(c["mean_psnr"] == float("inf") for c in config.provenance["candidates"])


def test_calibrate_refuses_bad_arguments_and_enabled_pipelines():
    pipe, kwargs, prompts = flux_cfg()
    with pytest.raises(ValueError, match=r"passes must be an integer in \[1, 12\]"):
        calibrate(pipe, prompts, passes=13, num_inference_steps=12, **kwargs)
    with pytest.raises(ValueError, match="prompts must be a non-empty list"):
        calibrate(pipe, [], passes=4, num_inference_steps=12, **kwargs)
    with pytest.raises(ValueError, match="prompts must be a non-empty list"):
        calibrate(pipe, "a cat", passes=4, num_inference_steps=12, **kwargs)
    with pytest.raises(ValueError, match="blend_weight must be"):
        calibrate(pipe, prompts, passes=4, num_inference_steps=12, blend_weights=(2.0,), **kwargs)
    with pytest.raises(ValueError, match="calibrate sets prompt itself; pass it as prompts="):
        calibrate(pipe, prompts, passes=4, num_inference_steps=12, **{**kwargs, "prompt": "x"})
    with pytest.raises(ValueError, match="fits must map names"):
        calibrate(pipe, prompts, passes=4, num_inference_steps=12, fits={"as configured": {}}, **kwargs)
    with pytest.raises(ValueError, match="history must be an integer >= 2"):
        calibrate(pipe, prompts, passes=4, num_inference_steps=12, fits={"tiny": {"history": 1, "degree": 0}}, **kwargs)
    # A local fit with fewer points than coefficients is refused for calibrate's fits as for the config.
    with pytest.raises(ValueError, match=r"history must be an integer >= 5 \(at least degree \+ 1 = 5"):
        calibrate(pipe, prompts, passes=4, num_inference_steps=12, fits={"window": {"history": 4}}, **kwargs)
    with pytest.raises(TypeError, match="takes a pipeline"):
        calibrate(pipe.transformer, prompts, passes=4, num_inference_steps=12)
    enable_spectrum(pipe)
    with pytest.raises(ValueError, match="already enabled"):
        calibrate(pipe, prompts, passes=4, num_inference_steps=12, **kwargs)


def test_calibrates_own_fits_have_a_point_per_coefficient():
    """Every fit calibrate plans with besides the config's own fits at least degree + 1 recorded steps."""
    from spectrum_cache import SpectrumConfig
    from spectrum_cache.integrations.calibrate import FITS

    assert FITS
    for name, fit in FITS.items():
        config = SpectrumConfig().replace(**fit)
        assert config.history is None or config.history >= config.degree + 1, name


def test_calibrate_a_modular_pipeline_with_cfg():
    from families_modular import build

    pipe, call = build("wan2.1", "cfg")
    call.pop("num_inference_steps", None)
    embeds = call.pop("prompt_embeds")
    config = calibrate(pipe, [{"prompt_embeds": embeds}], passes=4, num_inference_steps=8, blend_weights=(0.5,),
                       progress=False, **call)
    assert len(config.compute_steps) == 4 and config.provenance["pipeline"] == "WanModularPipeline"
    # Its loop blocks' bar settings were hidden during calibrate, and are absent again after.
    stack, loops = [pipe._blocks], []
    while stack:
        block = stack.pop()
        loops += [block] if hasattr(block, "progress_bar") else []
        stack.extend(getattr(block, "sub_blocks", {}).values())
    assert loops and all("_progress_bar_config" not in vars(block) for block in loops)
    enable_spectrum(pipe, config)
    pipe(prompt_embeds=embeds, num_inference_steps=8, **call)
    branches = spectrum_summary(pipe).branches
    assert {b.branch for b in branches} == {"cond", "uncond"}
    assert all(b.computed_steps == config.compute_steps for b in branches)
