"""Tests of the embedded model: data, checker, tokenizer, shipped pipeline, training/resume."""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch

from spectrum_cache.embedded import EmbeddedPipeline, load_pipeline, weights_path
from spectrum_cache.embedded.checker import CHROMA_MIN, color_mask, score_image
from spectrum_cache.embedded.data import (
    IMAGE_SIZE,
    MAX_TINT,
    POSITIONS,
    CaptionObject,
    Scene,
    SceneObject,
    is_held_out,
    make_batch,
    object_mask,
    parse_caption,
    render,
    render_array,
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
    assert a_images.shape == (16, 3, IMAGE_SIZE, IMAGE_SIZE) and a_images.min() >= -1 and a_images.max() <= 1
    # Different seeds give different scenes.
    assert len({sample_scene(s).caption for s in range(50)}) > 40


def test_captions_state_part_of_the_scene_and_leave_the_rest_open() -> None:
    stated_positions = stated_sizes = 0
    for seed in range(300):
        scene = sample_scene(seed)
        assert parse_caption(scene.caption) == scene.stated  # the caption says exactly what `stated` holds
        assert len({o.color for o in scene.objects}) == len(scene.objects)  # colour identifies an object
        stated_positions += sum(o.position is not None for o in scene.objects)
        stated_sizes += sum(o.size is not None for o in scene.objects)
        for obj in scene.objects:
            if obj.position:
                x0, x1, y0, y1 = POSITIONS[obj.position]
                cx, cy = obj.center
                assert x0 * IMAGE_SIZE <= cx <= x1 * IMAGE_SIZE and y0 * IMAGE_SIZE <= cy <= y1 * IMAGE_SIZE
            if obj.size == "small":
                assert obj.radius < 8.0
            elif obj.size == "large":
                assert obj.radius >= 10.5
    objects = sum(len(sample_scene(s).objects) for s in range(300))
    # Positions and sizes are stated only sometimes.
    assert 0.25 < stated_positions / objects < 0.55 and 0.2 < stated_sizes / objects < 0.5


def test_one_caption_has_many_pictures() -> None:
    """Scenes with the same caption differ in layout, texture and background."""
    by_caption: dict[str, list[Scene]] = {}
    for seed in range(3000):
        scene = sample_scene(seed)
        by_caption.setdefault(scene.caption, []).append(scene)
    repeated = [scenes for scenes in by_caption.values() if len(scenes) >= 2]
    assert repeated
    for scenes in repeated[:20]:
        a, b = render_array(scenes[0]), render_array(scenes[1])
        assert np.abs(a - b).mean() > 5


def test_objects_keep_their_hue_and_backgrounds_stay_grey() -> None:
    for seed in range(100):
        scene = sample_scene(seed)
        image = render_array(scene)
        covered = np.zeros(image.shape[:2], bool)
        for obj in scene.objects:
            covered |= object_mask(obj)
        chroma = image.max(-1) - image.min(-1)
        assert chroma[~covered].max() <= 2 * MAX_TINT + 1
        # The top object's visible pixels are found by the checker's colour mask.
        top = scene.objects[-1]
        mask = object_mask(top)
        if mask.any():
            assert color_mask(image, top.color)[mask].all(), (seed, top)
            assert chroma[mask].min() > CHROMA_MIN


def test_held_out_split() -> None:
    train = [sample_split_scene(s, held_out=False).caption for s in range(100)]
    held = [sample_split_scene(s, held_out=True).caption for s in range(100)]
    assert not any(is_held_out(c) for c in train)
    assert all(is_held_out(c) for c in held)


def test_parse_caption_rejects_other_text() -> None:
    assert parse_caption("a small red circle on the left and a blue square") == (
        CaptionObject("circle", "red", "small", "left"), CaptionObject("square", "blue", None, None))
    for text in ("a photo of a cat", "a red circle and a red square", "a huge red circle", ""):
        assert parse_caption(text) is None, text


# ---------------------------------------------------------------- checker


def test_checker_scores_ground_truth_nearly_perfectly() -> None:
    """Occlusion and clipping at the border hide some of a shape, so renders are not all 1.0."""
    from spectrum_cache.embedded.checker import Score

    total = Score()
    for seed in range(300):
        scene = sample_scene(seed)
        total.add(score_image(render(scene), scene))
    assert total.accuracy > 0.95
    assert total.correct["color"] / total.total["color"] > 0.98
    assert total.correct["position"] / total.total["position"] > 0.98
    assert total.correct["size"] / total.total["size"] > 0.98
    assert total.correct["shape"] / total.total["shape"] > 0.9


def _object(shape: str, color: str, size: str, position: str, center: tuple[float, float], radius: float) -> SceneObject:
    return SceneObject(shape, color, size, position, center, radius, 0.3, "stripes", (0.6, 4.0, 0.5, 1.0, 0.0))


def test_checker_penalises_wrong_captions() -> None:
    scene = Scene(
        objects=(_object("circle", "red", "large", "left", (11.0, 24.0), 12.0),
                 _object("triangle", "blue", "small", "top", (30.0, 9.0), 7.0)),
        background=(60.0, 3.0, -2.0, 0.0, 1.0, 30.0, 5.0, 6.0, 5.0, 0.4, 7.0),
        caption_order=(0, 1),
    )
    image = render(scene)
    assert score_image(image, scene).accuracy == 1.0
    right = list(scene.stated)
    wrong = {
        "color": [CaptionObject("circle", "green", "large", "left"), right[1]],
        "size": [CaptionObject("circle", "red", "small", "left"), right[1]],
        "shape": [right[0], CaptionObject("square", "blue", "small", "top")],
        "position": [right[0], CaptionObject("triangle", "blue", "small", "bottom")],
    }
    for attribute, caption in wrong.items():
        score = score_image(image, caption)
        assert score.accuracy < 1.0, attribute
        assert score.correct[attribute] < score.total[attribute], attribute
    # Unstated attributes are not scored.
    assert sum(score_image(image, [CaptionObject("circle", "red")]).total.values()) == 2
    # An all-background image gets nothing right.
    assert score_image(np.full((IMAGE_SIZE, IMAGE_SIZE, 3), 48, np.uint8), scene).accuracy == 0.0


# ---------------------------------------------------------------- tokenizer


def test_tokenizer_round_trip(tmp_path: Path) -> None:
    tok = WordTokenizer()
    text = "a large red circle on the left and a small blue square at the bottom and a cyan triangle"
    ids = tok.ids([text, ""])
    assert ids.shape == (2, tok.model_max_length)
    assert ids[0, 0] == tok.bos_token_id and ids[1, 0] == tok.bos_token_id
    assert (ids[1, 1:] == tok.pad_token_id).all()  # empty caption = [BOS] only (CFG's negative)
    assert tok.decode(ids[0], skip_special_tokens=True) == text
    assert tok.ids("a red zebra")[0, 3] == tok.unk_token_id
    # Case and punctuation are not part of a word: the ids are the plain caption's.
    assert torch.equal(tok.ids("A Large RED circle, on the left!"), tok.ids("a large red circle on the left"))
    assert tok.tokenize("red-circle... (blue); don't") == ["red", "circle", "blue", "don't"]
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
    assert image.shape == (1, IMAGE_SIZE, IMAGE_SIZE, 3) and np.isfinite(image).all()
    assert image.min() >= 0 and image.max() <= 1 and image.std() > 0.01
    pil = pipe(["a small blue square at the top"] * 2, num_inference_steps=2, output_type="pil").images
    assert len(pil) == 2 and pil[0].size == (IMAGE_SIZE, IMAGE_SIZE)
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
    assert a.shape == (1, 3, IMAGE_SIZE, IMAGE_SIZE)
    assert torch.allclose(a, b)


def _render_batch(scenes: list[Scene]) -> np.ndarray:
    return np.stack([np.round(render_array(s)) / 255 for s in scenes]).astype(np.float32)


def test_image_to_image_starts_from_the_noised_image(pipe: EmbeddedPipeline, monkeypatch: pytest.MonkeyPatch) -> None:
    scene = sample_scene(3)
    render = _render_batch([scene])
    # strength 1 starts from pure noise: the image has no weight, so it is plain text-to-image.
    plain = pipe(scene.caption, num_inference_steps=4, guidance_scale=1.0, output_type="np",
                 generator=torch.Generator().manual_seed(5)).images
    full = pipe(scene.caption, image=render, strength=1.0, num_inference_steps=4, guidance_scale=1.0,
                output_type="np", generator=torch.Generator().manual_seed(5)).images
    assert np.allclose(plain, full, atol=1e-6)
    # One step from sigma 1/50 hands the picture back nearly unchanged; text-to-image does not.
    kept = pipe(scene.caption, image=render, strength=0.02, num_inference_steps=50, guidance_scale=4.0,
                output_type="np", generator=torch.Generator().manual_seed(5)).images
    assert np.abs(kept - render).mean() < 0.02 < np.abs(plain - render).mean()
    # strength 0.5 of 10 steps runs the schedule's last 5, from t = 500, and says so to the caches.
    timesteps, where = [], []
    forward, context = pipe.transformer.forward, pipe.transformer.cache_context

    def recording_forward(*args, **kwargs):
        timesteps.append(round(float(kwargs["timestep"][0]) * 1000))
        return forward(*args, **kwargs)

    @contextmanager
    def recording_context(name: str, **loop_position):
        where.append(loop_position)
        with context(name):
            yield

    monkeypatch.setattr(pipe.transformer, "forward", recording_forward)
    monkeypatch.setattr(pipe.transformer, "cache_context", recording_context)
    pipe(scene.caption, image=render, strength=0.5, num_inference_steps=10, guidance_scale=1.0)
    assert timesteps == [500, 400, 300, 200, 100]
    assert [w["step_index"] for w in where] == [0, 1, 2, 3, 4]
    assert all(w["num_inference_steps"] == 5 for w in where)
    assert [round(w["sigma"], 4) for w in where] == [0.5, 0.4, 0.3, 0.2, 0.1]


def test_image_to_image_with_spectrum_plans_only_the_steps_it_runs() -> None:
    from spectrum_cache import SpectrumConfig, enable_spectrum, spectrum_summary
    from spectrum_cache.schedule import compute_steps

    pipe = load_pipeline(dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    config = SpectrumConfig(warmup_steps=3)
    enable_spectrum(pipe, config)
    scene = sample_scene(4)
    pipe(scene.caption, image=_render_batch([scene]), strength=0.6, num_inference_steps=20, guidance_scale=1.0)
    (branch,) = spectrum_summary(pipe).branches
    assert branch.num_inference_steps == 12
    assert list(branch.computed_steps) == compute_steps(config, 12)
    assert branch.forecast_steps  # it did skip passes


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"strength": 0.0, "with_image": True}, "strength must be in"),
        ({"strength": 1.5, "with_image": True}, "strength must be in"),
        ({"strength": 0.5}, "needs an image"),
        ({"with_image": True, "latents": torch.zeros(1, 64, 108)}, "not both"),
        ({"with_image": True, "prompt": ["a red circle"] * 2}, "image has 1 pictures for a batch of 2"),
        ({"num_inference_steps": 0}, "num_inference_steps must be a positive"),
    ],
)
def test_image_to_image_bad_input(pipe: EmbeddedPipeline, kwargs: dict, message: str) -> None:
    kwargs = dict(kwargs)
    if kwargs.pop("with_image", False):
        kwargs["image"] = _render_batch([sample_scene(0)])
    kwargs.setdefault("prompt", "a red circle")
    with pytest.raises(ValueError, match=message):
        pipe(num_inference_steps=kwargs.pop("num_inference_steps", 2), **kwargs)


def _np(pipe: EmbeddedPipeline, prompt: str | list[str], seed: int | list[int] = 0, **kwargs) -> np.ndarray:
    generator = [torch.Generator().manual_seed(s) for s in seed] if isinstance(seed, list) else torch.Generator().manual_seed(seed)
    return pipe(prompt, generator=generator, output_type="np", **kwargs).images


def test_num_images_per_prompt_makes_each_prompts_images_in_order(pipe: EmbeddedPipeline) -> None:
    prompts = ["a large red circle", "a small blue square"]
    images = _np(pipe, prompts, [0, 1, 2, 3], num_images_per_prompt=2, num_inference_steps=3)
    assert images.shape == (4, IMAGE_SIZE, IMAGE_SIZE, 3)
    # diffusers' order: the first prompt's images, then the second's, each from its own generator.
    for index, (prompt, seed) in enumerate([(prompts[0], 0), (prompts[0], 1), (prompts[1], 2), (prompts[1], 3)]):
        # A batch of 4 and a batch of 1 take different float32 kernels: up to 1.5e-5 apart on this machine's
        # CPU, far below one 8-bit level (3.9e-3); another prompt or seed is 1e-2 or more away (checked below).
        assert np.allclose(images[index], _np(pipe, prompt, seed, num_inference_steps=3)[0], atol=1e-4), index
    assert not np.allclose(images[0], images[1], atol=1e-2)  # two seeds, two pictures
    assert len(pipe("a red circle", num_images_per_prompt=3, num_inference_steps=1).images) == 3


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_images_per_prompt": 0}, "num_images_per_prompt must be a whole number >= 1, got 0"),
        ({"num_images_per_prompt": 2, "generator": [torch.Generator()] * 3}, "a list of 3 generators for 2 images"),
        ({"callback_on_step_end": lambda *a: {}, "callback_on_step_end_tensor_inputs": ["noise"]},
         "callback_on_step_end_tensor_inputs: 'noise' not among latents, prompt_embeds"),
        ({"callback_on_step_end": "latents"}, "callback_on_step_end must be callable"),
    ],
)
def test_batch_and_callback_bad_input(pipe: EmbeddedPipeline, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        pipe("a red circle", num_inference_steps=2, **kwargs)


def test_callback_on_step_end_sees_each_step_and_its_tensors_replace_the_loops(pipe: EmbeddedPipeline) -> None:
    seen: list[tuple[int, float, tuple, tuple]] = []

    def record(p: EmbeddedPipeline, i: int, t: torch.Tensor, tensors: dict) -> dict:
        assert p is pipe
        seen.append((i, float(t), tuple(tensors["latents"].shape), tuple(tensors["prompt_embeds"].shape)))
        return {}

    plain = _np(pipe, "a large red circle", num_inference_steps=4)
    recorded = _np(pipe, "a large red circle", num_inference_steps=4, callback_on_step_end=record,
                   callback_on_step_end_tensor_inputs=["latents", "prompt_embeds"])
    assert np.array_equal(plain, recorded)  # a callback that returns nothing changes nothing
    assert [(i, t) for i, t, _, _ in seen] == [(0, 1000.0), (1, 750.0), (2, 500.0), (3, 250.0)]
    assert seen[0][2] == (1, 64, 108) and seen[0][3][0] == 1

    def zero_at_the_end(p: EmbeddedPipeline, i: int, t: torch.Tensor, tensors: dict) -> dict:
        assert set(tensors) == {"latents"}  # the default tensor inputs
        return {"latents": torch.zeros_like(tensors["latents"])} if i == p.num_timesteps - 1 else {}

    grey = _np(pipe, "a large red circle", num_inference_steps=4, callback_on_step_end=zero_at_the_end)
    assert np.allclose(grey, 0.5)  # the returned latents are the loop's: zero pixels decode to mid-grey


def test_a_callback_can_interrupt_the_loop(pipe: EmbeddedPipeline, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    forward = pipe.transformer.forward
    monkeypatch.setattr(pipe.transformer, "forward", lambda *a, **k: calls.append(1) or forward(*a, **k))

    def stop_after_two(p: EmbeddedPipeline, i: int, t: torch.Tensor, tensors: dict) -> dict:
        if i == 1:
            p._interrupt = True
        return {}

    pipe("a red circle", num_inference_steps=6, guidance_scale=1.0, callback_on_step_end=stop_after_two)
    assert len(calls) == 2 and pipe.interrupt
    calls.clear()
    pipe("a red circle", num_inference_steps=3, guidance_scale=1.0)
    assert len(calls) == 3  # the next call starts uninterrupted


def test_negative_prompt_is_the_unconditional_branch(pipe: EmbeddedPipeline) -> None:
    prompt = "a large red circle"
    plain = _np(pipe, prompt, num_inference_steps=3)
    assert np.array_equal(plain, _np(pipe, prompt, negative_prompt="", num_inference_steps=3))  # "" is the default
    negative = _np(pipe, prompt, negative_prompt="a blue square", num_inference_steps=3)
    assert not np.allclose(plain, negative, atol=1e-3)
    embeds, pooled = pipe.encode_prompt("a blue square")
    by_embeds = _np(pipe, prompt, negative_prompt_embeds=embeds, negative_pooled_prompt_embeds=pooled, num_inference_steps=3)
    assert np.allclose(negative, by_embeds, atol=1e-6)
    assert np.array_equal(_np(pipe, prompt, num_inference_steps=3, guidance_scale=1.0),
                          _np(pipe, prompt, negative_prompt="a blue square", num_inference_steps=3, guidance_scale=1.0))
    with pytest.raises(ValueError, match="negative_prompt has 2 prompts for a batch of 1"):
        pipe(prompt, negative_prompt=["a", "b"], num_inference_steps=1)
    with pytest.raises(ValueError, match="not both"):
        pipe(prompt, negative_prompt="a", negative_prompt_embeds=embeds, negative_pooled_prompt_embeds=pooled)


def _other_schedulers(pipe: EmbeddedPipeline) -> dict:
    from diffusers import DPMSolverMultistepScheduler, FlowMatchHeunDiscreteScheduler

    return {
        "heun": FlowMatchHeunDiscreteScheduler.from_config(pipe.scheduler.config),
        "dpm++ flow": DPMSolverMultistepScheduler.from_config(pipe.scheduler.config, use_flow_sigmas=True,
                                                               prediction_type="flow_prediction"),
    }


@pytest.mark.parametrize("name", ["heun", "dpm++ flow"])
def test_other_flow_schedulers_sample_the_same_picture_with_and_without_spectrum(name: str) -> None:
    """Schedulers whose set_timesteps takes no sigmas (it used to fail: "unexpected keyword argument
    'sigmas'") sample on their own grid, land near the Euler sampler's picture, and Spectrum plans the
    steps, not Heun's two evaluations per step."""
    from spectrum_cache import SpectrumConfig, enable_spectrum, spectrum_summary
    from spectrum_cache.schedule import compute_steps

    pipe = load_pipeline(dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    prompt = "a large red circle"
    euler = _np(pipe, prompt, 0, num_inference_steps=50)
    other_seed = _np(pipe, prompt, 1, num_inference_steps=50)
    pipe.scheduler = _other_schedulers(pipe)[name]
    calls: list[int] = []
    counting = pipe.transformer.register_forward_pre_hook(lambda *_: calls.append(1))
    _np(pipe, prompt, 0, num_inference_steps=20, guidance_scale=1.0)
    counting.remove()
    assert len(calls) == (2 * 20 - 1 if name == "heun" else 20)  # Heun: two evaluations but on the last step
    image = _np(pipe, prompt, 0, num_inference_steps=20)
    assert np.isfinite(image).all() and np.abs(image - euler).mean() < 0.5 * np.abs(other_seed - euler).mean()
    enable_spectrum(pipe, SpectrumConfig())
    cached = _np(pipe, prompt, 0, num_inference_steps=20)
    branch = spectrum_summary(pipe).branches[0]
    assert branch.num_inference_steps == 20 and list(branch.computed_steps) == compute_steps(SpectrumConfig(), 20)
    assert 0 < np.abs(cached - image).mean() < 0.5 * np.abs(other_seed - euler).mean()


def test_image_to_image_refuses_a_scheduler_without_scale_noise(pipe: EmbeddedPipeline) -> None:
    import copy

    other = copy.copy(pipe)
    other.scheduler = _other_schedulers(pipe)["dpm++ flow"]
    with pytest.raises(ValueError, match="image-to-image needs a scheduler with scale_noise.*DPMSolverMultistepScheduler has none"):
        other("a red circle", image=_render_batch([sample_scene(0)]), strength=0.5, num_inference_steps=4)


# ---------------------------------------------------------------- training


TINY = ["--width", "32", "--heads", "2", "--dual", "1", "--single", "1", "--text-width", "32",
        "--text-layers", "1", "--text-heads", "2", "--batch-size", "4", "--warmup", "2", "--no-compile"]


def _state(ckpt: Path) -> dict:
    # weights_only, as --resume loads it: a checkpoint that needs more would fail here.
    return torch.load(ckpt / "state.pt", map_location="cpu", weights_only=True)


class _Payload:
    """Unpickling this writes a marker file: what a crafted checkpoint could do with any code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').write('ran')",)


def _crafted_checkpoint(ckpt: Path, marker: Path) -> None:
    ckpt.mkdir(parents=True)
    torch.save({"step": 0, "args": {}, "transformer": _Payload(marker)}, ckpt / "state.pt")


def test_resume_does_not_run_code_in_a_crafted_checkpoint(tmp_path: Path) -> None:
    from spectrum_cache.embedded.train import main

    marker = tmp_path / "marker"
    _crafted_checkpoint(tmp_path / "evil", marker)
    with pytest.raises(SystemExit) as refused:
        main(["--out", str(tmp_path / "pipe"), "--ckpt-dir", str(tmp_path / "evil"), "--steps", "1", "--resume", *TINY])
    assert not marker.exists()
    message = str(refused.value.code)
    assert "\n" not in message and "state.pt" in message and "(exec)" in message and "not loaded" in message
    assert not (tmp_path / "pipe").exists()  # nothing trained or exported


def test_resume_refusal_is_one_line_on_the_command_line(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    marker = tmp_path / "marker"
    _crafted_checkpoint(tmp_path / "evil", marker)
    missing, damaged = tmp_path / "missing", tmp_path / "damaged"
    damaged.mkdir()
    (damaged / "state.pt").write_bytes(b"not a checkpoint")
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")]))}
    for ckpt in (tmp_path / "evil", missing, damaged):
        run = subprocess.run(
            [sys.executable, "-m", "spectrum_cache.embedded.train", "--out", str(tmp_path / "pipe"), "--ckpt-dir",
             str(ckpt), "--steps", "1", "--resume", *TINY],
            capture_output=True, text=True, env=env, timeout=120,
        )
        lines = [line for line in run.stderr.splitlines() if line.startswith("--resume")]
        assert run.returncode != 0 and "Traceback" not in run.stderr, run.stderr
        assert len(lines) == 1 and str(ckpt) in lines[0], run.stderr
    assert not marker.exists()


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


def test_sample_prediction_trains_and_its_pipeline_recovers_the_velocity(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--prediction sample: the transformer predicts x0 and the pipeline steps with (x_t - x0) / sigma, so a
    model that always predicts the same image lands exactly on it."""
    from spectrum_cache.embedded.model import pack, unpack
    from spectrum_cache.embedded.train import main

    out = tmp_path / "pipe"
    summary = main(["--out", str(out), "--ckpt-dir", str(tmp_path / "c"), "--steps", "2", "--prediction", "sample", *TINY])
    assert np.isfinite(summary["final_loss_last100"])
    with pytest.raises(SystemExit, match="--prediction velocity"):
        main(["--out", str(out), "--ckpt-dir", str(tmp_path / "c"), "--steps", "3", "--resume", *TINY])
    pipe = EmbeddedPipeline.from_pretrained(out, dtype=torch.float32)
    assert pipe.config.prediction_type == "sample"
    size = pipe.config.sample_size
    target = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0)) * 2 - 1
    patch = int((pipe.transformer.config.in_channels // 3) ** 0.5)
    monkeypatch.setattr(pipe.transformer, "forward", lambda *a, **k: (pack(target, patch),))
    image = pipe("a red circle", num_inference_steps=7, guidance_scale=1.0, output_type="pt").images
    torch.testing.assert_close(image, unpack(pack(target, patch), size, size, patch).mul(0.5).add(0.5).clamp(0, 1),
                               rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="prediction_type must be one of velocity, sample"):
        EmbeddedPipeline(pipe.transformer, pipe.text_encoder, pipe.tokenizer, pipe.scheduler, prediction_type="x0")


def test_training_with_another_patch_side_exports_a_pipeline_that_samples(tmp_path: Path) -> None:
    """--patch 4: 144 tokens of 4x4 pixels; the exported pipeline reads the patch side back and samples."""
    from spectrum_cache.embedded.train import main

    out = tmp_path / "pipe"
    main(["--out", str(out), "--ckpt-dir", str(tmp_path / "p"), "--steps", "1", "--patch", "4", *TINY])
    pipe = EmbeddedPipeline.from_pretrained(out, dtype=torch.float32)
    assert pipe.transformer.config.in_channels == 3 * 4 * 4
    image = pipe("a red circle", num_inference_steps=2, guidance_scale=1.0, output_type="pt").images
    assert image.shape == (1, 3, 48, 48) and torch.isfinite(image).all()
    with pytest.raises(SystemExit):
        main(["--out", str(out), "--ckpt-dir", str(tmp_path / "q"), "--steps", "1", "--patch", "5", *TINY])


def _record_transformer_argument(pipe: EmbeddedPipeline, monkeypatch: pytest.MonkeyPatch, name: str) -> list[torch.Tensor]:
    """Copies of the keyword argument `name` of every transformer call the pipeline makes from now on."""
    seen: list[torch.Tensor] = []
    forward = pipe.transformer.forward

    def spy(*args, **kwargs):
        seen.append(kwargs[name].clone())
        return forward(*args, **kwargs)

    monkeypatch.setattr(pipe.transformer, "forward", spy)
    return seen


def test_pixel_position_unit_reaches_the_transformer_and_survives_export(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--position-unit pixel: the exported pipeline says so in its config and feeds the transformer RoPE
    positions of row * patch, col * patch; a checkpoint refuses to resume under another unit or patch."""
    from spectrum_cache.embedded.model import image_ids
    from spectrum_cache.embedded.train import main

    out = tmp_path / "pipe"
    main(["--out", str(out), "--ckpt-dir", str(tmp_path / "u"), "--steps", "1", "--patch", "4",
          "--position-unit", "pixel", *TINY])
    pipe = EmbeddedPipeline.from_pretrained(out, dtype=torch.float32)
    assert pipe.config.position_unit == "pixel"
    seen = _record_transformer_argument(pipe, monkeypatch, "img_ids")
    pipe("a red circle", num_inference_steps=2, guidance_scale=1.0, output_type="pt")
    assert len(seen) == 2
    tokens = image_ids(48, 48, patch=4)
    torch.testing.assert_close(seen[0], 4 * tokens, rtol=0, atol=0)
    assert seen[0][:, 1:].max() == 44  # the last row and column of 4x4 patches start at pixel 44
    for flag in (["--position-unit", "token"], ["--patch", "6"]):
        with pytest.raises(SystemExit, match=flag[0]):
            main(["--out", str(out), "--ckpt-dir", str(tmp_path / "u"), "--steps", "2", "--resume", "--patch", "4",
                  "--position-unit", "pixel", *TINY, *flag])
    with pytest.raises(ValueError, match="position_unit must be one of token, pixel"):
        image_ids(48, 48, patch=4, position_unit="pixels")
    with pytest.raises(ValueError, match="position_unit must be one of token, pixel"):
        EmbeddedPipeline(pipe.transformer, pipe.text_encoder, pipe.tokenizer, pipe.scheduler, position_unit="px")


def test_position_channels_give_the_transformer_coordinates_and_spectrum_still_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--position-channels 8: every input token carries sin/cos of its patch centre after its pixels
    (in_channels 48 + 8, out_channels 48); sampling, export and Spectrum work on such a model."""
    from spectrum_cache import SpectrumConfig, enable_spectrum
    from spectrum_cache.embedded.model import position_features
    from spectrum_cache.embedded.train import main

    out = tmp_path / "pipe"
    main(["--out", str(out), "--ckpt-dir", str(tmp_path / "k"), "--steps", "1", "--patch", "4",
          "--position-channels", "8", *TINY])
    pipe = EmbeddedPipeline.from_pretrained(out, dtype=torch.float32)
    assert (pipe.transformer.config.in_channels, pipe.transformer.config.out_channels) == (56, 48)
    feats = position_features(48, 48, 4, 8)
    assert feats.shape == (144, 8)
    # Token (row 0, col 11): x of its centre is 46/48 of the side, y is 2/48; frequency pi then 2 pi.
    x, y = 46 / 48, 2 / 48
    expected = [np.sin(np.pi * x), np.sin(2 * np.pi * x), np.cos(np.pi * x), np.cos(2 * np.pi * x),
                np.sin(np.pi * y), np.sin(2 * np.pi * y), np.cos(np.pi * y), np.cos(2 * np.pi * y)]
    np.testing.assert_allclose(feats[11].numpy(), expected, atol=1e-6)
    seen = _record_transformer_argument(pipe, monkeypatch, "hidden_states")
    gen = torch.Generator().manual_seed(0)
    plain = pipe("a red circle", num_inference_steps=8, guidance_scale=1.0, output_type="pt", generator=gen).images
    assert seen[0].shape == (1, 144, 56)
    torch.testing.assert_close(seen[0][0, :, 48:], feats, rtol=0, atol=0)
    monkeypatch.undo()
    enable_spectrum(pipe, SpectrumConfig(num_inference_steps=8, warmup_steps=2, window_size=2))
    cached = pipe("a red circle", num_inference_steps=8, guidance_scale=1.0, output_type="pt",
                  generator=torch.Generator().manual_seed(0)).images
    assert cached.shape == plain.shape and torch.isfinite(cached).all()
    assert not torch.equal(cached, plain)  # some steps were forecast
    for bad in (["--position-channels", "6"], ["--position-channels", "-4"]):
        with pytest.raises(SystemExit):
            main(["--out", str(out), "--ckpt-dir", str(tmp_path / "z"), "--steps", "1", *TINY, *bad])
    with pytest.raises(SystemExit, match="--position-channels"):
        main(["--out", str(out), "--ckpt-dir", str(tmp_path / "k"), "--steps", "2", "--resume", "--patch", "4", *TINY])


def test_timestep_shift_moves_training_toward_high_noise() -> None:
    """--timestep-shift s maps each step's logit-normal t to s t / (1 + (s - 1) t), nothing else changes."""
    from spectrum_cache.embedded.train import parse_args, training_batch

    tokenizer = WordTokenizer()
    plain = training_batch(7, parse_args(["--out", "x", "--batch-size", "64"]), tokenizer)
    shifted = training_batch(7, parse_args(["--out", "x", "--batch-size", "64", "--timestep-shift", "3"]), tokenizer)
    torch.testing.assert_close(shifted["t"], 3 * plain["t"] / (1 + 2 * plain["t"]))
    assert (shifted["t"] > plain["t"]).all() and (shifted["t"] < 1).all()
    for key in ("x0", "noise", "input_ids"):
        assert torch.equal(shifted[key], plain[key]), key
    with pytest.raises(SystemExit):
        parse_args(["--out", "x", "--timestep-shift", "0"])


def test_frozen_text_encoder_keeps_its_seeded_weights(tmp_path: Path) -> None:
    """--freeze-text-encoder: the exported text encoder is the seeded initialisation, the transformer
    trains, and a checkpoint refuses to resume without the flag."""
    from spectrum_cache.embedded.train import main

    for name, flag in (("frozen", ["--freeze-text-encoder"]), ("joint", [])):
        main(["--out", str(tmp_path / name), "--ckpt-dir", str(tmp_path / f"{name}_ckpt"), "--steps", "2", *TINY, *flag])
    frozen, joint = _state(tmp_path / "frozen_ckpt"), _state(tmp_path / "joint_ckpt")
    for key in ("text_encoder", "ema_text_encoder"):
        moved = [n for n, v in joint[key].items() if not torch.equal(v, frozen[key][n])]
        assert moved, key  # the joint run trained its text encoder; the frozen one kept the seeded one
    from spectrum_cache.embedded.model import build_models, text_encoder_config, transformer_config

    torch.manual_seed(0)
    tokenizer = WordTokenizer()
    seeded_transformer, seeded = build_models(transformer_config(32, 2, 1, 1, 32),
                                              text_encoder_config(len(tokenizer), 32, 1, 2, tokenizer.model_max_length))
    for n, v in seeded.state_dict().items():
        assert torch.equal(frozen["text_encoder"][n], v), n
        assert torch.equal(frozen["ema_text_encoder"][n], v), n
    assert any(not torch.equal(v, frozen["transformer"][n]) for n, v in seeded_transformer.state_dict().items())
    exported = EmbeddedPipeline.from_pretrained(tmp_path / "frozen", dtype=torch.float32)
    for n, v in exported.text_encoder.state_dict().items():
        torch.testing.assert_close(v, seeded.state_dict()[n].half().float(), rtol=0, atol=0)
    with pytest.raises(SystemExit, match="--freeze-text-encoder"):
        main(["--out", str(tmp_path / "frozen"), "--ckpt-dir", str(tmp_path / "frozen_ckpt"), "--steps", "3", "--resume", *TINY])
