"""Tests of the embedded model: data, checker, tokenizer, shipped pipeline, training/resume."""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch

from spectrum_cache.embedded import EmbeddedPipeline, load_pipeline, weights_path
from spectrum_cache.embedded.checker import score_image
from spectrum_cache.embedded.data import (
    COLORS,
    POSITIONS,
    Scene,
    SceneObject,
    is_held_out,
    make_batch,
    object_box,
    render,
    sample_scene,
    sample_split_scene,
)
from spectrum_cache.embedded.tokenizer import WordTokenizer


# ---------------------------------------------------------------- data


def test_data_is_deterministic() -> None:
    a_images, a_captions = make_batch(list(range(16)))
    b_images, b_captions = make_batch(list(range(16)))
    assert a_captions == b_captions
    assert np.array_equal(a_images, b_images)
    assert a_images.shape == (16, 3, 32, 32) and a_images.min() >= -1 and a_images.max() <= 1
    # Different seeds give different scenes.
    assert len({sample_scene(s).caption for s in range(50)}) > 40


def test_captions_match_drawn_scene() -> None:
    for seed in range(200):
        scene = sample_scene(seed)
        image = np.asarray(render(scene))
        words = scene.caption.split(" and ")
        assert len(words) == len(scene.objects)
        for phrase, obj in zip(words, scene.objects):
            assert phrase.split()[1:4] == [obj.size, obj.color, obj.shape]
            assert obj.position in phrase
            x0, y0, x1, y1 = object_box(obj)
            # The centre of the box is inside all three shapes (triangles point up).
            cy, cx = (y0 + y1 + 1) // 2, (x0 + x1) // 2
            assert tuple(image[cy, cx]) == COLORS[obj.color], (seed, obj)
        used = {POSITIONS[o.position] for o in scene.objects}
        assert len(used) == len(scene.objects)  # distinct positions, so shapes never overlap
        # Pixels that are not the background all have one of the objects' colours.
        colors = {COLORS[o.color] for o in scene.objects} | {scene.background}
        assert {tuple(p) for p in image.reshape(-1, 3)} <= colors


def test_held_out_split() -> None:
    train = [sample_split_scene(s, held_out=False).caption for s in range(100)]
    held = [sample_split_scene(s, held_out=True).caption for s in range(100)]
    assert not any(is_held_out(c) for c in train)
    assert all(is_held_out(c) for c in held)


# ---------------------------------------------------------------- checker


def test_checker_scores_ground_truth_perfectly() -> None:
    for seed in range(300):
        scene = sample_scene(seed)
        score = score_image(render(scene), scene)
        assert score.accuracy == 1.0, (seed, scene.caption, score)
        assert score.extra_cells == 0


def _replace(scene: Scene, index: int, **changes: str) -> Scene:
    objects = list(scene.objects)
    fields = {**objects[index].__dict__, **changes}
    objects[index] = SceneObject(**fields)
    return Scene(objects=tuple(objects), background=scene.background)


def test_checker_penalises_wrong_captions() -> None:
    scene = Scene(
        objects=(SceneObject("circle", "red", "large", "left"), SceneObject("triangle", "blue", "small", "top")),
        background=(48, 48, 48),
    )
    image = render(scene)
    assert score_image(image, scene).accuracy == 1.0
    wrong = {
        "color": _replace(scene, 0, color="green"),
        "size": _replace(scene, 0, size="small"),
        "shape": _replace(scene, 1, shape="square"),
        "position": _replace(scene, 1, position="bottom"),
    }
    for attribute, other in wrong.items():
        score = score_image(image, other)
        assert score.accuracy < 1.0, attribute
        assert score.correct[attribute] < score.total[attribute], attribute
    # An all-background image gets nothing right.
    assert score_image(np.full((32, 32, 3), 48, np.uint8), scene).accuracy == 0.0


# ---------------------------------------------------------------- tokenizer


def test_tokenizer_round_trip(tmp_path: Path) -> None:
    tok = WordTokenizer()
    text = "a large red circle on the left and a small blue square at the bottom"
    ids = tok.ids([text, ""])
    assert ids.shape == (2, tok.model_max_length)
    assert ids[0, 0] == tok.bos_token_id and ids[1, 0] == tok.bos_token_id
    assert (ids[1, 1:] == tok.pad_token_id).all()  # empty caption = [BOS] only (CFG's negative)
    assert tok.decode(ids[0], skip_special_tokens=True) == text
    assert tok.ids("a red zebra")[0, 3] == tok.unk_token_id
    tok.save_pretrained(tmp_path)
    vocab = json.loads((tmp_path / "vocab.json").read_text())
    assert vocab == tok.get_vocab()
    loaded = WordTokenizer.from_pretrained(tmp_path)
    assert torch.equal(loaded.ids([text, ""]), ids)


# ---------------------------------------------------------------- shipped pipeline


def test_weights_folder_is_small_and_complete() -> None:
    folder = weights_path()
    files = [p for p in folder.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) <= 20 * 1024 * 1024
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == "EmbeddedPipeline"
    for component in ("transformer", "text_encoder", "tokenizer", "scheduler"):
        assert component in index and (folder / component).is_dir()
    assert (folder / "transformer" / "diffusion_pytorch_model.safetensors").is_file()
    assert (folder / "text_encoder" / "diffusion_pytorch_model.safetensors").is_file()


@pytest.fixture(scope="module")
def pipe() -> EmbeddedPipeline:
    pipe = EmbeddedPipeline.from_pretrained(weights_path(), dtype=torch.float32, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_pipeline_loads_and_generates(pipe: EmbeddedPipeline) -> None:
    from diffusers import FluxTransformer2DModel

    assert isinstance(pipe.transformer, FluxTransformer2DModel)
    assert not pipe.transformer.config.guidance_embeds
    gen = torch.Generator().manual_seed(0)
    out = pipe("a large red circle on the left", num_inference_steps=4, generator=gen, output_type="np")
    image = out.images
    assert image.shape == (1, 32, 32, 3) and np.isfinite(image).all()
    assert image.min() >= 0 and image.max() <= 1 and image.std() > 0.01
    pil = pipe(["a small blue square at the top"] * 2, num_inference_steps=2, output_type="pil").images
    assert len(pil) == 2 and pil[0].size == (32, 32)
    # Same seed, same image.
    again = pipe("a large red circle on the left", num_inference_steps=4,
                 generator=torch.Generator().manual_seed(0), output_type="np").images
    assert np.array_equal(image, again)


def test_load_pipeline_helper() -> None:
    pipe = load_pipeline(dtype=torch.float32)
    assert isinstance(pipe, EmbeddedPipeline)
    assert pipe.transformer.dtype == torch.float32 and pipe.text_encoder.dtype == torch.float32


def test_cfg_calls_transformer_twice_per_step_in_cache_contexts(pipe: EmbeddedPipeline, monkeypatch: pytest.MonkeyPatch) -> None:
    contexts: list[str] = []
    where: list[dict] = []
    calls: list[str | None] = []
    current: list[str | None] = [None]
    transformer = pipe.transformer
    original_forward = transformer.forward

    @contextmanager
    def recording_context(name: str, **loop_position):
        contexts.append(name)
        where.append(loop_position)
        current[0] = name
        try:
            yield
        finally:
            current[0] = None

    def recording_forward(*args, **kwargs):
        calls.append(current[0])
        assert kwargs["hidden_states"].shape[0] == 1  # cond and uncond are never batched together
        return original_forward(*args, **kwargs)

    monkeypatch.setattr(transformer, "cache_context", recording_context)
    monkeypatch.setattr(transformer, "forward", recording_forward)
    pipe("a large red circle on the left", num_inference_steps=3, guidance_scale=4.0)
    assert calls == ["cond", "uncond"] * 3
    # Each call says where the loop is (diffusers' SeaCache needs it).
    assert [w["step_index"] for w in where] == [0, 0, 1, 1, 2, 2]
    assert all(w["num_inference_steps"] == 3 and 0 < w["sigma"] <= 1 for w in where)
    calls.clear()
    pipe("a large red circle on the left", num_inference_steps=5, guidance_scale=1.0)
    assert calls == ["cond"] * 5  # no CFG: one call per step
    assert len(pipe.scheduler.timesteps) == 5  # set_timesteps is called on every call


def test_prompt_embeds_match_prompt(pipe: EmbeddedPipeline) -> None:
    prompt = "a small green triangle at the bottom"
    embeds, pooled = pipe.encode_prompt(prompt)
    a = pipe(prompt, num_inference_steps=2, generator=torch.Generator().manual_seed(1), output_type="pt").images
    b = pipe(prompt_embeds=embeds, pooled_prompt_embeds=pooled, num_inference_steps=2,
             generator=torch.Generator().manual_seed(1), output_type="pt").images
    assert a.shape == (1, 3, 32, 32)
    assert torch.allclose(a, b)


# ---------------------------------------------------------------- training


TINY = ["--width", "32", "--heads", "2", "--dual", "1", "--single", "1", "--text-width", "32",
        "--text-layers", "1", "--text-heads", "2", "--batch-size", "4", "--warmup", "2"]


def _state(ckpt: Path) -> dict:
    return torch.load(ckpt / "state.pt", map_location="cpu", weights_only=False)


def test_training_runs_and_resumes_exactly(tmp_path: Path) -> None:
    from spectrum_cache.embedded.train import main

    # Two steps from scratch, exported as a loadable pipeline.
    out = tmp_path / "pipe"
    summary = main(["--out", str(out), "--ckpt-dir", str(tmp_path / "a"), "--steps", "2", *TINY])
    assert summary["steps"] == 2 and np.isfinite(summary["final_loss_last100"])
    after_two = _state(tmp_path / "a")
    assert after_two["step"] == 2 and len(after_two["losses"]) == 2
    loaded = EmbeddedPipeline.from_pretrained(out, dtype=torch.float32)
    assert loaded.transformer.config.num_layers == 1
    # Resume that run to step 3; it must equal a 3-step run made in one go.
    main(["--out", str(out), "--ckpt-dir", str(tmp_path / "a"), "--steps", "3", "--resume", *TINY])
    main(["--out", str(tmp_path / "pipe_b"), "--ckpt-dir", str(tmp_path / "b"), "--steps", "3", *TINY])
    resumed, straight = _state(tmp_path / "a"), _state(tmp_path / "b")
    assert resumed["step"] == straight["step"] == 3
    assert resumed["losses"][:2] == straight["losses"][:2]
    for key in ("transformer", "ema_transformer", "text_encoder"):
        for name, value in straight[key].items():
            assert torch.allclose(resumed[key][name], value, atol=1e-6), (key, name)
    assert resumed["losses"][:2] == after_two["losses"]  # resume kept the history, not restarted
    # The third step really updated the weights.
    moved = [not torch.equal(after_two["transformer"][n], v) for n, v in resumed["transformer"].items()]
    assert any(moved)
