"""`spectrum-cache generate`'s options for real models (--height/--width, --negative-prompt, --dtype,
--offload), a broken model folder named by its component, --traceback, and the labelled progress bars.
Run through the console script, as a user does."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from spectrum_cache.cli import EMBEDDED_UPSCALE
from helpers import PROMPT, error_lines, run_cli


def _broken_flux_folder(out: Path) -> Path:
    """A tiny FluxPipeline folder whose tokenizer_2 (a CLIPTokenizer) has a cut-off vocab.json: the
    transformer and scheduler load, the tokenizer does not."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel

    torch.manual_seed(0)
    transformer = FluxTransformer2DModel(
        patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=16, num_attention_heads=2,
        joint_attention_dim=24, pooled_projection_dim=20, axes_dims_rope=(4, 6, 6))
    FluxPipeline(scheduler=FlowMatchEulerDiscreteScheduler(), vae=None, text_encoder=None, tokenizer=None,
                 text_encoder_2=None, tokenizer_2=None, transformer=transformer).save_pretrained(out)
    index = json.loads((out / "model_index.json").read_text())
    index["tokenizer_2"] = ["transformers", "CLIPTokenizer"]
    (out / "model_index.json").write_text(json.dumps(index))
    (out / "tokenizer_2").mkdir()
    (out / "tokenizer_2" / "vocab.json").write_text('{"a": 0')
    (out / "tokenizer_2" / "merges.txt").write_text("#version: 0.2\n")
    return out


@pytest.fixture(scope="module")
def broken_flux(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _broken_flux_folder(tmp_path_factory.mktemp("model") / "tiny-flux")


def test_a_broken_model_folder_names_the_component_in_one_line(broken_flux: Path, tmp_path: Path) -> None:
    proc = run_cli("generate", PROMPT, "--model", str(broken_flux), "--out", str(tmp_path / "x.png"), "-v", script=True)
    assert proc.returncode == 1
    (line,) = [line for line in error_lines(proc) if "error" in line]
    assert line.startswith(f"spectrum-cache: error: cannot load --model '{broken_flux}': its tokenizer_2 (CLIPTokenizer) "
                           "failed to load: "), line
    assert "Traceback" not in proc.stderr  # not even with -v


def test_traceback_shows_what_caused_the_one_line_error(broken_flux: Path, tmp_path: Path) -> None:
    proc = run_cli("generate", PROMPT, "--model", str(broken_flux), "--out", str(tmp_path / "x.png"), "--traceback",
                   script=True)
    assert proc.returncode == 1
    assert "Traceback (most recent call last)" in proc.stderr and "load_sub_model" in proc.stderr
    assert proc.stderr.rstrip().splitlines()[-1].startswith("spectrum-cache: error: cannot load --model")


def test_a_broken_embedded_folder_names_its_tokenizer(tmp_path: Path) -> None:
    import shutil

    from spectrum_cache.embedded import weights_path

    folder = tmp_path / "weights"
    shutil.copytree(weights_path(), folder)
    (folder / "tokenizer" / "vocab.json").write_text('{"not": ')
    proc = run_cli("generate", PROMPT, "--model", str(folder), "--out", str(tmp_path / "x.png"), script=True)
    assert proc.returncode == 1
    assert "its tokenizer (WordTokenizer) failed to load: JSONDecodeError" in error_lines(proc)[-1]


@pytest.mark.skipif(torch.cuda.is_available() or torch.backends.mps.is_available(), reason="needs a machine without an accelerator")
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--offload", "model"], "--offload model needs an accelerator (cuda, xpu, mps) to move each component onto "
                                 "while it runs; this machine has none"),
        (["--offload", "sequential", "--device", "cpu"], "--offload sequential moves each component onto --device while "
                                                         "it runs, so it needs an accelerator (cuda, xpu, mps); --device cpu is not one"),
    ],
)
def test_offload_without_an_accelerator_is_one_line_before_loading(args: list[str], message: str, tmp_path: Path) -> None:
    proc = run_cli("generate", PROMPT, "--model", "spectrum-cache-tests/no-such-model", *args,
                   "--out", str(tmp_path / "x.png"), script=True)
    assert proc.returncode == 2
    (line,) = error_lines(proc)
    assert line.startswith(f"spectrum-cache: error: {message}") and "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--offload", "disk"], "argument --offload: invalid choice: 'disk' (choose from 'model', 'sequential')"),
        (["--dtype", "float64"], "argument --dtype: invalid choice: 'float64' (choose from 'float32', 'float16', 'bfloat16')"),
        (["--height", "0"], "argument --height: must be an integer >= 1, got '0'"),
        (["--width", "wide"], "argument --width: must be an integer >= 1, got 'wide'"),
        (["--true-cfg-scale", "2"], "--true-cfg-scale: EmbeddedPipeline takes no true_cfg_scale"),
        (["--height", "50"], "--height 50: the embedded model draws sizes that are multiples of 6 pixels (e.g. 48 or 54)"),
        (["--width", "3"], "--width 3: the embedded model draws sizes that are multiples of 6 pixels (e.g. 6)"),
        (["--num-frames", "9"], "--num-frames: EmbeddedPipeline takes no num_frames (it is for video pipelines)"),
    ],
)
def test_bad_model_options_fail_in_one_line(args: list[str], message: str, tmp_path: Path) -> None:
    proc = run_cli("generate", PROMPT, "--steps", "2", *args, "--out", str(tmp_path / "x.png"), script=True)
    assert proc.returncode == 2, proc.stderr
    (line,) = error_lines(proc)
    assert message in line and "Traceback" not in proc.stderr
    assert "Loading pipeline components" not in proc.stderr  # refused before the model loads
    assert not (tmp_path / "x.png").exists()


def test_height_width_negative_prompt_and_dtype_reach_the_pipeline(tmp_path: Path) -> None:
    base = ["generate", PROMPT, "--steps", "6", "--seed", "3"]
    plain = run_cli(*base, "--out", str(tmp_path / "plain.png"), script=True)
    sized = run_cli(*base, "--height", "36", "--width", "60", "--negative-prompt", "a green triangle",
                    "--dtype", "bfloat16", "-v", "--out", str(tmp_path / "sized.png"), script=True)
    negative = run_cli(*base, "--negative-prompt", "a green triangle", "--out", str(tmp_path / "negative.png"), script=True)
    for proc in (plain, sized, negative):
        assert proc.returncode == 0, proc.stderr
    assert Image.open(tmp_path / "sized.png").size == (60 * EMBEDDED_UPSCALE, 36 * EMBEDDED_UPSCALE)
    assert "loading the embedded model in bfloat16 on cpu" in sized.stderr
    # The negative prompt is the unconditional branch: same seed, another picture.
    assert Image.open(tmp_path / "plain.png").tobytes() != Image.open(tmp_path / "negative.png").tobytes()


def test_offload_calls_diffusers_and_leaves_the_weights_on_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """The wiring of --offload, without an accelerator: diffusers' method is called with the device,
    and the pipeline is not moved there first."""
    from spectrum_cache.embedded import EmbeddedPipeline
    from spectrum_cache.errors import CommandError
    from spectrum_cache.loading import check_offload, load_model

    calls: list[tuple[str, str]] = []
    for method in ("enable_model_cpu_offload", "enable_sequential_cpu_offload"):
        monkeypatch.setattr(EmbeddedPipeline, method, lambda self, device, _m=method: calls.append((_m, device)))
    for mode, method in (("model", "enable_model_cpu_offload"), ("sequential", "enable_sequential_cpu_offload")):
        pipe = load_model(None, "cuda", torch.bfloat16, offload=mode)
        assert calls[-1] == (method, "cuda")
        assert pipe.transformer.device.type == "cpu" and pipe.transformer.dtype == torch.bfloat16
    check_offload("model", "cuda:1", "cuda:1")  # an accelerator: fine
    monkeypatch.setattr(EmbeddedPipeline, "enable_model_cpu_offload",
                        lambda self, device: (_ for _ in ()).throw(RuntimeError("requires accelerate\nmore")))
    with pytest.raises(CommandError, match=r"^--offload model: EmbeddedPipeline.enable_model_cpu_offload failed: "
                                           r"requires accelerate$"):
        load_model(None, "cuda", offload="model")


def test_compare_labels_every_progress_bar(tmp_path: Path) -> None:
    proc = run_cli("generate", PROMPT, "--steps", "6", "--compare", "--out", str(tmp_path / "c.png"), script=True)
    assert proc.returncode == 0, proc.stderr
    bars = [part.strip() for part in proc.stderr.replace("\r", "\n").splitlines() if "it/s]" in part or "s/it]" in part]
    labels = {bar.split(":")[0] for bar in bars if "Loading pipeline components" not in bar}
    assert labels == {"warm-up (2 steps, untimed)", "Spectrum", "full sampler"}, bars


def test_help_says_out_creates_missing_folders_and_names_the_model_options() -> None:
    proc = run_cli("generate", "--help", script=True)
    text = " ".join(proc.stdout.split())
    assert "folders on its path that do not exist are created" in text
    for option in ("--height", "--width", "--negative-prompt", "--dtype", "--offload", "--traceback"):
        assert option in text


def test_out_into_a_missing_folder_creates_it(tmp_path: Path) -> None:
    out = tmp_path / "new" / "deeper" / "img.png"
    proc = run_cli("generate", PROMPT, "--steps", "2", "--out", str(out), script=True)
    assert proc.returncode == 0, proc.stderr
    assert out.is_file()


def _flux_folder(out: Path, image_processor: bool) -> Path:
    """A tiny FluxPipeline folder (transformer and scheduler only, so loading stops at the missing text encoders,
    after the pipeline's module and its image processor classes were imported); with ``image_processor`` its
    model_index.json also lists a feature_extractor, as IP-Adapter-ready FLUX checkpoints do."""
    folder = _broken_flux_folder(out)
    index = json.loads((folder / "model_index.json").read_text())
    index["tokenizer_2"] = [None, None]
    if image_processor:
        index["feature_extractor"] = ["transformers", "CLIPImageProcessor"]
    (folder / "model_index.json").write_text(json.dumps(index))
    return folder


@pytest.mark.parametrize("image_processor", [False, True])
def test_the_torchvision_notice_shows_only_for_a_pipeline_with_an_image_processor(image_processor: bool,
                                                                                  tmp_path: Path) -> None:
    import importlib.util

    from spectrum_cache.loading import TORCHVISION_NOTICE

    if importlib.util.find_spec("torchvision") is not None:
        pytest.skip("torchvision is installed: transformers has no notice to give")
    folder = _flux_folder(tmp_path / "tiny-flux", image_processor)
    proc = run_cli("generate", PROMPT, "--model", str(folder), "--out", str(tmp_path / "x.png"), script=True)
    assert proc.returncode == 1 and "cannot load --model" in proc.stderr  # the other messages still show
    assert (TORCHVISION_NOTICE in proc.stderr) == image_processor, proc.stderr


def test_the_notice_filter_drops_nothing_else() -> None:
    import logging

    from spectrum_cache.loading import TORCHVISION_NOTICE, quiet_torchvision_notice

    notices = logging.getLogger("transformers.utils.import_utils")
    seen: list[str] = []

    class Keep(logging.Handler):  # on the logger itself: transformers' root logger does not propagate
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    keep = Keep(logging.WARNING)
    notices.addHandler(keep)
    try:
        with quiet_torchvision_notice(None):
            notices.warning(f"`CLIPImageProcessor` {TORCHVISION_NOTICE} `CLIPImageProcessorPil`")
            notices.warning("Could not import module 'X'")
    finally:
        notices.removeHandler(keep)
    assert seen == ["Could not import module 'X'"]
    assert not notices.filters  # removed on the way out
