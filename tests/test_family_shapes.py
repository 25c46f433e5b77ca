"""The family builders keep the shapes of real checkpoints.

Tiny configs where every width is 16 hid crashes that every real FLUX.2, Chroma, CogVideoX and Lumina2
checkpoint hits: a forecast step handed a tensor of one width where another was expected, and nothing
noticed because the two were equal. These checks keep the builders honest: the denoiser's latent, inner,
text and pooled widths all differ, the latent grid is not square (and has more than one frame for video),
and the flagship families run a batch of two.
"""

from __future__ import annotations

import pytest
import torch

from families import FAMILIES

# Families whose tiny pipeline must run more than one image (or video) per call.
BATCHED = ("flux", "flux2-dev", "flux2-klein", "sd3", "qwen-image", "chroma", "lumina2", "sdxl", "wan2.1",
           "qwen-image-2.1", "krea2", "kandinsky5", "stable-audio", "ltx2", "kandinsky6")

# The text-encoder width, by the first config key a class has: caption_channels before cross_attention_dim,
# since Sana, PixArt and LTX project the caption to the inner width before their cross-attention.
# Stable Audio projects its text (cross_attention_input_dim) to cross_attention_dim likewise. Qwen-Image 2.1
# names it context_in_dim, Krea 2 text_hidden_dim, Kandinsky 5 in_text_dim.
TEXT_KEYS = (
    "caption_channels", "cap_feat_dim", "text_embed_dim", "text_dim", "joint_attention_dim",
    "cross_attention_input_dim", "cross_attention_dim", "context_in_dim", "text_hidden_dim", "in_text_dim",
)
# Families whose latents are one-dimensional (audio): a sequence, no height or width.
AUDIO = ("stable-audio",)


def widths(config) -> dict[str, int]:
    """Named widths of a denoiser config; a name maps to several widths where the class has several."""
    latent_key = "in_channels" if "in_channels" in config else "in_visual_dim"  # Kandinsky 5: in_visual_dim
    out: dict[str, int] = {f"latent ({latent_key})": config[latent_key]}
    if config.get("num_attention_heads") and config.get("attention_head_dim") and "block_out_channels" not in config:
        out["inner (heads x head_dim)"] = config["num_attention_heads"] * config["attention_head_dim"]
    elif config.get("hidden_size"):
        out["inner (hidden_size)"] = config["hidden_size"]
    elif config.get("dim"):
        out["inner (dim)"] = config["dim"]
    elif config.get("model_dim"):  # Kandinsky 5
        out["inner (model_dim)"] = config["model_dim"]
    for i, channels in enumerate(config.get("block_out_channels") or ()):
        out[f"inner (block_out_channels[{i}])"] = channels
    key = next(k for k in TEXT_KEYS if config.get(k))
    text = config[key]
    for i, w in enumerate(text if isinstance(text, (list, tuple)) else [text]):
        out[f"text ({key}[{i}])" if isinstance(text, (list, tuple)) else f"text ({key})"] = w
    if config.get("pooled_projection_dim"):
        out["pooled (pooled_projection_dim)"] = config["pooled_projection_dim"]
    if config.get("text_emb_dim"):  # HiDream's pooled CLIP width
        out["pooled (text_emb_dim)"] = config["text_emb_dim"]
    if config.get("text_embed_2_dim"):  # HunyuanVideo 1.5's ByT5 text
        out["text (text_embed_2_dim)"] = config["text_embed_2_dim"]
    if config.get("in_text_dim2"):  # Kandinsky 5's pooled CLIP width
        out["pooled (in_text_dim2)"] = config["in_text_dim2"]
    if config.get("global_states_input_dim"):  # Stable Audio's global (seconds) token
        out["pooled (global_states_input_dim)"] = config["global_states_input_dim"]
    # Audio-video models (LTX-2, Kandinsky 6): the audio stream's latent and inner widths.
    if config.get("audio_in_channels"):
        out["audio (audio_in_channels)"] = config["audio_in_channels"]
        out["audio inner (audio heads x head_dim)"] = (
            config["audio_num_attention_heads"] * config["audio_attention_head_dim"]
        )
    if config.get("in_audio_dim"):
        out["audio (in_audio_dim)"] = config["in_audio_dim"]
        out["audio inner (model_dim_a)"] = config.get("model_dim_a") or config["model_dim"]
    if config.get("addition_embed_type") == "text_time":  # SDXL: pooled width plus six time ids
        out["pooled (added-condition input)"] = (
            config["projection_class_embeddings_input_dim"] - 6 * config["addition_time_embed_dim"]
        )
    return out


class _FirstCall(Exception):
    pass


def first_denoiser_call(pipe, kwargs, name: str) -> dict:
    """The arguments of the first call to denoiser ``name``; the generation stops there."""
    seen = {}

    def grab(module, args, call_kwargs):
        seen.update(call_kwargs)
        if args:
            seen.setdefault("hidden_states", args[0])
        raise _FirstCall

    handle = getattr(pipe, name).register_forward_pre_hook(grab, with_kwargs=True)
    try:
        with pytest.raises(_FirstCall):
            pipe(**kwargs, generator=torch.Generator().manual_seed(0))
    finally:
        handle.remove()
    return seen


def _spatial_patch(config) -> tuple[int, int]:
    patch = config.get("patch_size") or (config.get("all_patch_size") or (1,))[0]
    if isinstance(patch, (list, tuple)):
        return int(patch[-2]), int(patch[-1])
    return int(patch), int(patch)


def latent_grid(call: dict, config) -> tuple[int, int, int]:
    """(frames, token rows, token columns) of the denoiser's latent input."""
    ph, pw = _spatial_patch(config)
    hidden = call.get("hidden_states", call.get("sample", call.get("x")))
    if isinstance(hidden, (list, tuple)):  # Z-Image: one (C, F, H, W) tensor per sample
        hidden = hidden[0].unsqueeze(0)
    if hidden.ndim == 4:  # (B, C, H, W)
        return 1, hidden.shape[2] // ph, hidden.shape[3] // pw
    if hidden.ndim == 5 and "in_visual_dim" in config:  # Kandinsky 5: channels last, (B, F, H, W, C)
        return hidden.shape[1], hidden.shape[2] // ph, hidden.shape[3] // pw
    if hidden.ndim == 5:  # (B, C, F, H, W), or CogVideoX's (B, F, C, H, W)
        frames = hidden.shape[2] if hidden.shape[1] == config["in_channels"] else hidden.shape[1]
        return frames, hidden.shape[3] // ph, hidden.shape[4] // pw
    # Packed tokens (B, N, C): the grid is in the position ids or the shape arguments.
    if "img_shapes" in call:  # Qwen-Image: [(frames, rows, columns)] per sample
        frames, rows, cols = call["img_shapes"][0][0]
        return frames, rows, cols
    if "num_frames" in call and "height" in call:  # LTX: latent frames, rows, columns
        return call["num_frames"], call["height"], call["width"]
    if "position_ids" in call:  # Krea 2 (N, 3): text tokens at (0, 0, 0), image tokens at (0, h, w)
        ids = call["position_ids"]
        return 1, int(ids[:, 1].unique().numel()), int(ids[:, 2].unique().numel())
    ids = call["img_ids"]
    ids = ids[0] if ids.ndim == 3 else ids  # FLUX.1 / Chroma (N, 3): (0, h, w); FLUX.2 (B, N, 4): (t, h, w, l)
    frames = int(ids[:, 0].unique().numel()) if ids.shape[-1] == 4 else 1
    return frames, int(ids[:, 1].unique().numel()), int(ids[:, 2].unique().numel())


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_every_width_differs(name):
    family = FAMILIES[name]
    pipe, _ = family.build()
    for denoiser in family.denoisers:
        found = widths(getattr(pipe, denoiser).config)
        assert any(k.startswith("inner") for k in found) and any(k.startswith("text") for k in found), found
        values = list(found.values())
        clashes = {k: v for k, v in found.items() if values.count(v) > 1}
        assert not clashes, f"{name}.{denoiser}: equal widths {clashes} (all: {found})"


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_latents_are_not_square(name):
    family = FAMILIES[name]
    pipe, kwargs = family.build()
    pipe.set_progress_bar_config(disable=True)
    denoiser = family.denoisers[0]
    if name in AUDIO:  # (B, C, L): the sequence is as long as neither the channels nor the inner width
        hidden = first_denoiser_call(pipe, kwargs, denoiser)["hidden_states"]
        found = widths(getattr(pipe, denoiser).config)
        assert hidden.ndim == 3 and hidden.shape[-1] not in found.values(), f"{name}: latents {tuple(hidden.shape)}"
        return
    assert kwargs["height"] != kwargs["width"]
    frames, rows, cols = latent_grid(first_denoiser_call(pipe, kwargs, denoiser), getattr(pipe, denoiser).config)
    assert rows >= 2 and cols >= 2 and rows != cols, f"{name}: {rows} x {cols} latent tokens"
    if "num_frames" in kwargs:
        assert frames >= 2, f"{name}: {frames} latent frame(s)"


def images_per_call(kwargs) -> int:
    embeds = kwargs.get("prompt_embeds", kwargs.get("prompt_embeds_t5", kwargs.get("prompt_embeds_qwen")))
    prompts = len(embeds) if isinstance(embeds, list) else embeds.shape[0]
    per_prompt = ("num_images_per_prompt", "num_videos_per_prompt", "num_waveforms_per_prompt")
    return prompts * next((kwargs[k] for k in per_prompt if k in kwargs), 1)


@pytest.mark.parametrize("name", BATCHED)
def test_flagship_families_run_a_batch_of_two(name):
    family = FAMILIES[name]
    pipe, kwargs = family.build()
    pipe.set_progress_bar_config(disable=True)
    assert images_per_call(kwargs) >= 2
    call = first_denoiser_call(pipe, kwargs, family.denoisers[0])
    hidden = call.get("hidden_states", call.get("sample", call.get("x")))
    batch = len(hidden) if isinstance(hidden, list) else hidden.shape[0]
    assert batch >= 2 * (2 if family.cfg == "batched" else 1)


def test_some_video_family_runs_a_batch_of_two():
    assert any("num_frames" in FAMILIES[name].build()[1] for name in BATCHED)
