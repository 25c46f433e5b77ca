"""The options `generate` and `calibrate` share (one --guidance-scale, --dtype, --offload, --negative-prompt,
--num-frames), checked before the model loads; warnings in the command's one-line style; the advice for a
--speedup out of reach names what the command line can do. In process, on the embedded model."""

from __future__ import annotations

from pathlib import Path

import pytest

from spectrum_cache import SpectrumConfig
from spectrum_cache.cli import main

PROMPT = "a red circle and a green square"


def _one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.strip().splitlines() if line.startswith("spectrum-cache") and ": error: " in line]
    assert len(lines) == 1 and "Traceback" not in err and "Loading pipeline components" not in err, err
    return lines[0]


@pytest.mark.parametrize("spelling", ["--guidance-scale", "--guidance"])
def test_calibrate_takes_guidance_scale_and_the_old_spelling_warns(spelling: str, tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    schedule = tmp_path / "s.json"
    assert main(["calibrate", "--passes", "3", "--steps", "6", "--num-prompts", "1", spelling, "4",
                 "--dtype", "bfloat16", "--negative-prompt", "a green triangle", "-v", "--out", str(schedule)]) == 0
    err = capsys.readouterr().err
    config = SpectrumConfig.load(schedule)
    assert config.provenance["guidance_scale"] == 4.0 and len(config.compute_steps) == 3
    assert "loading the embedded model in bfloat16 on cpu" in err  # --dtype reached the loader
    warned = [line for line in err.splitlines() if "deprecated" in line]
    if spelling == "--guidance":
        assert warned == ["spectrum-cache: warning: --guidance is deprecated; use --guidance-scale, as generate and "
                          "bench do"]
    else:
        assert warned == []


@pytest.mark.parametrize(("args", "message"), [
    (["--guidance", "4", "--guidance-scale", "3"], "--guidance is the deprecated spelling of --guidance-scale"),
    (["--height", "50"], "--height 50: the embedded model draws sizes that are multiples of 6 pixels"),
    (["--num-frames", "9"], "--num-frames: EmbeddedPipeline takes no num_frames (it is for video pipelines)"),
    (["--offload", "model", "--device", "cpu"], "--offload model moves each component onto --device while it runs"),
    (["--dtype", "float64"], "argument --dtype: invalid choice: 'float64'"),
])
def test_calibrate_refuses_bad_model_options_before_loading(args: list[str], message: str, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["calibrate", "--passes", "3", "--steps", "6", *args, "--out", str(tmp_path / "s.json")]) == 2
    assert message in _one_line_error(capsys)
    assert not (tmp_path / "s.json").exists()


def test_speedup_out_of_reach_names_what_the_command_line_can_do(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["generate", PROMPT, "--steps", "4", "--speedup", "2", "--out", str(tmp_path / "x.png")]) == 2
    line = _one_line_error(capsys)
    assert "warmup_steps" not in line  # no option sets it
    assert line.endswith("so the highest speedup is 1.00x; use --steps 12 or more, or plan a schedule of 2 passes "
                         "with `spectrum-cache calibrate --steps 4 --passes 2 --out FILE` and pass it as --schedule FILE")
    # Both ways out work: 12 steps reach 2x, and a 2-pass schedule of 4 steps runs.
    assert main(["generate", PROMPT, "--steps", "12", "--speedup", "2", "--out", str(tmp_path / "a.png")]) == 0
    schedule = tmp_path / "s.json"
    assert main(["calibrate", "--steps", "4", "--passes", "2", "--num-prompts", "1", "--out", str(schedule)]) == 0
    assert main(["generate", PROMPT, "--steps", "4", "--schedule", str(schedule), "--out", str(tmp_path / "b.png")]) == 0
    assert "Spectrum: 2 of 4 steps computed" in capsys.readouterr().out


def test_a_schedule_from_another_model_warns_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    schedule = tmp_path / "s.json"
    provenance = {"pipeline": "FluxPipeline", "denoisers": {"transformer": {"class": "WanTransformer3DModel",
                                                                            "config_hash": "0"}}}
    SpectrumConfig(num_inference_steps=8, compute_steps=(0, 1, 2, 5), provenance=provenance).save(schedule)
    assert main(["generate", PROMPT, "--schedule", str(schedule), "--out", str(tmp_path / "x.png")]) == 0
    err = capsys.readouterr().err
    warned = [line for line in err.splitlines() if "calibrated on another model" in line]
    assert len(warned) == 1 and warned[0].startswith("spectrum-cache: warning: this schedule (compute_steps) was "
                                                     "calibrated on another model: its transformer is a ")
    assert "SpectrumWarning" not in err and "warnings.warn" not in err  # not Python's two-line format


@pytest.mark.parametrize("size", [(64, 64), (48, 30), (512, 320)])
def test_the_side_by_side_is_readable_at_any_output_size(size: tuple[int, int]) -> None:
    from PIL import Image, ImageFont

    from spectrum_cache.cli import side_by_side

    labels = ("full sampler (50 passes)", "Spectrum (14 of 50 passes)")
    caption = "PSNR 30.12 dB, measured speedup 3.21x"
    full, spectrum = Image.new("RGB", size, "red"), Image.new("RGB", size, "blue")
    pair = side_by_side(full, spectrum, *labels, caption)
    font = ImageFont.load_default(size=15)
    pad, gap = 8, 12
    panel = (pair.width - 2 * pad - gap) // 2  # each image's width on the canvas
    assert panel % size[0] == 0 and panel >= size[0]  # a whole factor: pixels stay sharp
    assert all(font.getlength(label) < panel + gap for label in labels)  # titles do not run into each other
    assert font.getlength(caption) <= pair.width - 2 * pad  # the caption is not clipped
    assert pair.getpixel((pad + panel // 2, pair.height // 2)) == (255, 0, 0)
    assert pair.getpixel((pad + panel + gap + panel // 2, pair.height // 2)) == (0, 0, 255)
    if size[0] >= 300:
        assert panel == size[0]  # large outputs are not enlarged


def _tiny_wan_with_vae():
    """families.wan21's tiny WanPipeline with a tiny AutoencoderKLWan (8x spatial, 4x temporal: 5 frames are 2
    latent frames), and prompts encoded as fixed random embeddings (no UMT5 offline)."""
    import torch
    from diffusers import AutoencoderKLWan
    from families import wan21

    pipe, kwargs = wan21()
    torch.manual_seed(0)
    pipe.register_modules(vae=AutoencoderKLWan(base_dim=8, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                                               attn_scales=[], temperal_downsample=[False, True, True]))
    embeds, negative = kwargs["prompt_embeds"], kwargs["negative_prompt_embeds"]
    pipe.encode_prompt = lambda *args, **kw: (embeds, negative)
    return pipe


def test_num_frames_reaches_a_video_pipeline_and_compare_animates_it(tmp_path, monkeypatch, capsys):
    """`generate --model FOLDER --num-frames 5 --compare` on a WanPipeline: the transformer sees 2 latent frames
    (5 frames through the VAE's 4x temporal factor; Wan's default, 81, would be 21), and the comparison is an
    animation with one frame per video frame."""
    from PIL import Image

    from spectrum_cache import loading
    from spectrum_cache.cli import main

    folder = tmp_path / "wan"
    folder.mkdir()
    (folder / "model_index.json").write_text('{"_class_name": "WanPipeline", "_diffusers_version": "0.42.1"}')
    pipe = _tiny_wan_with_vae()
    monkeypatch.setattr(loading, "load_model", lambda *args, **kwargs: pipe)
    latent_frames = []
    handle = pipe.transformer.register_forward_pre_hook(
        lambda module, args, kwargs: latent_frames.append(kwargs["hidden_states"].shape[2]), with_kwargs=True)
    try:
        status = main(["generate", "a cat", "--model", str(folder), "--num-frames", "5", "--height", "32", "--width",
                       "48", "--steps", "6", "--compare", "--out", str(tmp_path / "cat.gif"), "--threads", "1"])
    finally:
        handle.remove()
    assert status == 0, capsys.readouterr()
    assert latent_frames and set(latent_frames) == {2}
    with Image.open(tmp_path / "cat-compare.gif") as comparison:
        assert comparison.n_frames == 5
