"""Every denoiser class in diffusers 0.42.1, built tiny, with the inputs of one denoiser call.

One ``Denoiser`` per class of ``diffusers.models.transformers`` and ``diffusers.models.unets`` that denoises
(the ``*Transformer*Model`` / DiT classes and the UNets whose forward takes a timestep). Left out as non-denoisers:
``PriorTransformer`` (the unCLIP prior), ``TransformerTemporalModel`` and ``DualTransformer2DModel``
(sub-blocks inside UNets) and ``MiniMaxMusic3RVQDepthDecoder`` (an RVQ token decoder, no timestep).

Each ``build`` returns ``(model, inputs)``: a random-initialised model whose widths all differ (latent
channels, inner width = heads x head_dim, text width, pooled width), and the forward's keyword inputs
for a non-square latent (more tokens along the width than the height; two latent frames for video),
without the latent and the timestep, which the loop (``denoise``) passes. The configs are written from
the classes' ``__init__`` signatures and forward code, with diffusers' own model tests
(tests/models/transformers in its repository) as the guide to what a tiny call needs.

``reason`` marks a class Spectrum cannot support: ``enable_spectrum`` must refuse it with that reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

STEPS = 12

# Model classes of diffusers.models.transformers and diffusers.models.unets that are not denoisers: the unCLIP
# prior (it denoises a CLIP image embedding from a text embedding, not a latent), the attention sub-blocks of
# UNets (temporal, dual, DreamLite's; their UNet is the denoiser), AnimateDiff's MotionAdapter (weights that
# UNetMotionModel loads), and two token models without a timestep: MiniMax Music 3's RVQ decoder and aMUSEd's
# UVit2DModel (masked-token prediction). enable_spectrum refuses the last two: no timestep argument.
NOT_DENOISERS = ("PriorTransformer", "TransformerTemporalModel", "DualTransformer2DModel",
                 "DreamLiteTransformer2DModel", "MiniMaxMusic3RVQDepthDecoder", "MotionAdapter", "UVit2DModel")


@dataclass
class Denoiser:
    cls: str
    build: Callable[[], tuple[nn.Module, dict[str, Any]]]
    latent: str = "hidden_states"  # the forward argument holding the noisy latent
    timestep: str = "timestep"  # the forward argument holding the timestep
    scale: float = 1000.0  # the loop's timestep is scale * (1 - i / n)
    # (t, latent) -> the timestep argument, or a dict of arguments; default a (batch,) tensor
    make_t: Callable[[float, Any], Any] | None = None
    reason: str | None = None  # not supported: the refusal message must contain this


def _g(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def randn(*shape: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(*shape, generator=_g(seed))


def seeded(seed: int = 0) -> None:
    torch.manual_seed(seed)


def first_tensor(out: Any, latent: Any = None) -> Any:
    """The denoiser's prediction: the first tensor of its output (the first list of tensors for a list
    latent)."""
    while not isinstance(out, torch.Tensor):
        if isinstance(latent, list) and isinstance(out, list) and isinstance(out[0], torch.Tensor):
            return out
        if isinstance(out, dict) or hasattr(out, "to_tuple"):
            out = next(iter(out.values())) if isinstance(out, dict) else out.to_tuple()[0]
        else:
            out = out[0]
    return out


def _update(x: torch.Tensor, v: torch.Tensor, n: int) -> torch.Tensor:
    """One Euler step x - v / n; where the prediction's shape differs (learned sigma, conditioning
    channels in the input), the overlapping part."""
    if v.shape == x.shape:
        return x - v / n
    if v.dim() != x.dim():
        v = v.reshape(x.shape) if v.numel() == x.numel() else v
    if v.dim() == x.dim():
        region = tuple(slice(0, min(a, b)) for a, b in zip(x.shape, v.shape))
        x = x.clone()
        x[region] = x[region] - v[region] / n
        return x
    return x


@torch.no_grad()
def build(entry: Denoiser) -> tuple[nn.Module, dict[str, Any]]:
    """``entry``'s model in eval mode, as from_pretrained leaves it, and its inputs. Parameters that
    diffusers initialises to zero (adaLN-zero gates, output projections, biases) get small random values,
    as trained weights have: a zero output layer would make every schedule give the same latents."""
    model, inputs = entry.build()
    generator = _g(7)
    for param in model.parameters():
        if param.numel() and not param.any():
            param.copy_(torch.randn(param.shape, generator=generator) * 0.02)
    return model.eval(), inputs


def default_t(t: float, x: Any) -> torch.Tensor:
    batch = x[0].shape[0] if isinstance(x, (list, tuple)) else x.shape[0]
    return torch.full((batch,), t)


@torch.no_grad()
def denoise(entry: Denoiser, model: nn.Module, inputs: dict[str, Any], n: int = STEPS) -> torch.Tensor:
    """A bare-denoiser Euler loop of ``n`` steps; returns the last latent."""
    x = inputs[entry.latent]
    rest = {k: v for k, v in inputs.items() if k != entry.latent}
    make_t = entry.make_t or default_t
    for i in range(n):
        t = make_t(entry.scale * (1.0 - i / n), x)
        t = t if isinstance(t, dict) else {entry.timestep: t}
        v = first_tensor(model(**{entry.latent: x}, **t, **rest), x)
        x = [_update(a, b, n) for a, b in zip(x, v)] if isinstance(x, list) else _update(x, v, n)
    return torch.cat([a.flatten() for a in x]) if isinstance(x, list) else x


# -- builders: UNet and the classic DiTs -----------------------------------------------------------
# Widths, unless a builder says otherwise: latent channels 4 (patch 2) or 16 (packed), inner 2 x 16 = 32,
# text 24, pooled 20; latents 8 x 12 (4 x 6 patches).


def unet():
    from diffusers import UNet2DConditionModel

    seeded()
    model = UNet2DConditionModel(
        block_out_channels=(16, 32), layers_per_block=1, sample_size=8, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4), cross_attention_dim=24, norm_num_groups=8,
    )
    return model, dict(sample=randn(2, 4, 8, 12), encoder_hidden_states=randn(2, 5, 24), return_dict=False)



def dreamlite_unet():
    from diffusers import DreamLiteUNetModel

    seeded()
    # DreamLite's denoiser is this UNet (DreamLiteTransformer2DModel is one of its attention blocks).
    model = DreamLiteUNetModel(
        in_channels=4, out_channels=4, block_out_channels=(16, 32), layers_per_block=1,
        down_block_types=("DreamLiteCrossAttnNoSelfAttnDownBlock2D", "DreamLiteCrossAttnDownBlock2D"),
        up_block_types=("DreamLiteCrossAttnUpBlock2D", "DreamLiteUpBlock2D"), norm_num_groups=8,
        cross_attention_dim=24, attention_head_dim=8, ff_mult=2,
    )
    return model, dict(sample=randn(2, 4, 8, 12), encoder_hidden_states=randn(2, 5, 24), return_dict=False)


def dit():
    from diffusers import DiTTransformer2DModel

    seeded()
    model = DiTTransformer2DModel(
        in_channels=4, out_channels=8, num_attention_heads=2, attention_head_dim=16, num_layers=2, patch_size=2,
        sample_size=8, num_embeds_ada_norm=1000,
    )
    # DiT's unpatchify takes the token grid as square (height = width = sqrt(tokens)): a square latent.
    return model, dict(hidden_states=randn(2, 4, 8, 8), class_labels=torch.tensor([1, 3]), return_dict=False)


def pixart():
    from diffusers import PixArtTransformer2DModel

    seeded()
    model = PixArtTransformer2DModel(
        sample_size=8, num_layers=2, patch_size=2, attention_head_dim=16, num_attention_heads=2, in_channels=4,
        out_channels=8, cross_attention_dim=32, caption_channels=24, norm_type="ada_norm_single",
        num_embeds_ada_norm=1000, use_additional_conditions=False, interpolation_scale=1,
    )
    return model, dict(hidden_states=randn(2, 4, 8, 12), encoder_hidden_states=randn(2, 5, 24),
                       added_cond_kwargs={"resolution": None, "aspect_ratio": None}, return_dict=False)


def transformer_2d():
    from diffusers import Transformer2DModel

    seeded()
    model = Transformer2DModel(
        num_attention_heads=2, attention_head_dim=16, in_channels=4, out_channels=8, num_layers=2, patch_size=2,
        sample_size=8, norm_type="ada_norm_zero", num_embeds_ada_norm=1000,
    )
    # As DiT's: the patched path unpatchifies a square token grid.
    return model, dict(hidden_states=randn(2, 4, 8, 8), class_labels=torch.tensor([0, 2]), return_dict=False)


def sd3():
    from diffusers import SD3Transformer2DModel

    seeded()
    model = SD3Transformer2DModel(
        sample_size=8, patch_size=2, in_channels=4, out_channels=4, num_layers=2, attention_head_dim=16,
        num_attention_heads=2, caption_projection_dim=32, joint_attention_dim=24, pooled_projection_dim=20,
        pos_embed_max_size=16,
    )
    return model, dict(hidden_states=randn(2, 4, 8, 12), encoder_hidden_states=randn(2, 5, 24),
                       pooled_projections=randn(2, 20), return_dict=False)


def auraflow():
    from diffusers import AuraFlowTransformer2DModel

    seeded()
    model = AuraFlowTransformer2DModel(
        sample_size=8, patch_size=2, in_channels=4, out_channels=4, num_mmdit_layers=1, num_single_dit_layers=1,
        attention_head_dim=16, num_attention_heads=2, caption_projection_dim=32, joint_attention_dim=24,
        pos_embed_max_size=64,
    )
    return model, dict(hidden_states=randn(2, 4, 8, 12), encoder_hidden_states=randn(2, 5, 24), return_dict=False)


def _flux_ids(h, w, text):
    img = torch.zeros(h, w, 3)
    img[..., 1] = torch.arange(h)[:, None]
    img[..., 2] = torch.arange(w)[None, :]
    return img.reshape(h * w, 3), torch.zeros(text, 3)


def flux():
    from diffusers import FluxTransformer2DModel

    seeded()
    model = FluxTransformer2DModel(
        patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=16,
        num_attention_heads=2, joint_attention_dim=24, pooled_projection_dim=20, axes_dims_rope=(4, 6, 6),
    )
    img_ids, txt_ids = _flux_ids(2, 3, 5)
    return model, dict(hidden_states=randn(2, 6, 16), encoder_hidden_states=randn(2, 5, 24),
                       pooled_projections=randn(2, 20), img_ids=img_ids, txt_ids=txt_ids, return_dict=False)


def _flux_family(cls_name, **config):
    import diffusers

    def build():
        seeded()
        model = getattr(diffusers, cls_name)(
            patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=16,
            num_attention_heads=2, joint_attention_dim=24, axes_dims_rope=(4, 6, 6), **config,
        )
        img_ids, txt_ids = _flux_ids(2, 3, 5)
        return model, dict(hidden_states=randn(2, 6, 16), encoder_hidden_states=randn(2, 5, 24), img_ids=img_ids,
                           txt_ids=txt_ids, return_dict=False)

    return build


def _flux2_ids(h, w, text, batch=2):
    img = torch.cartesian_prod(torch.arange(1), torch.arange(h), torch.arange(w), torch.arange(1))
    txt = torch.cartesian_prod(torch.arange(1), torch.arange(1), torch.arange(1), torch.arange(text))
    return img[None].expand(batch, -1, -1), txt[None].expand(batch, -1, -1)


def flux2():
    from diffusers import Flux2Transformer2DModel

    seeded()
    model = Flux2Transformer2DModel(
        patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=16,
        num_attention_heads=2, joint_attention_dim=24, timestep_guidance_channels=20, axes_dims_rope=(4, 4, 4, 4),
        guidance_embeds=True,
    )
    img_ids, txt_ids = _flux2_ids(2, 3, 5)
    return model, dict(hidden_states=randn(2, 6, 16), encoder_hidden_states=randn(2, 5, 24), img_ids=img_ids,
                       txt_ids=txt_ids, guidance=torch.full((2,), 3.5), return_dict=False)


def chroma():
    from diffusers import ChromaTransformer2DModel

    seeded()
    model = ChromaTransformer2DModel(
        patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=16,
        num_attention_heads=2, joint_attention_dim=24, axes_dims_rope=(4, 6, 6), approximator_num_channels=8,
        approximator_hidden_dim=20, approximator_layers=1,
    )
    img_ids, txt_ids = _flux_ids(2, 3, 5)
    return model, dict(hidden_states=randn(2, 6, 16), encoder_hidden_states=randn(2, 5, 24), img_ids=img_ids,
                       txt_ids=txt_ids, return_dict=False)



def bria():
    from diffusers import BriaTransformer2DModel

    seeded()
    model = BriaTransformer2DModel(
        patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=16,
        num_attention_heads=2, joint_attention_dim=24, axes_dims_rope=(0, 8, 8),
    )
    img_ids, txt_ids = _flux_ids(2, 3, 5)
    return model, dict(hidden_states=randn(2, 6, 16), encoder_hidden_states=randn(2, 5, 24), img_ids=img_ids,
                       txt_ids=txt_ids, return_dict=False)


def bria_fibo():
    from diffusers import BriaFiboTransformer2DModel

    seeded()
    # text_encoder_dim 20: each text encoder layer's width; joint_attention_dim 24: the prompt's.
    model = BriaFiboTransformer2DModel(
        patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=16,
        num_attention_heads=2, joint_attention_dim=24, text_encoder_dim=20, axes_dims_rope=(0, 8, 8),
    )
    img_ids, txt_ids = _flux_ids(2, 3, 5)
    return model, dict(hidden_states=randn(2, 6, 16), encoder_hidden_states=randn(2, 5, 24), img_ids=img_ids,
                       txt_ids=txt_ids, text_encoder_layers=[randn(2, 5, 20, seed=2), randn(2, 5, 20, seed=3)],
                       return_dict=False)


def longcat_image():
    from diffusers import LongCatImageTransformer2DModel

    seeded()
    model = LongCatImageTransformer2DModel(
        patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=16,
        num_attention_heads=2, joint_attention_dim=24, pooled_projection_dim=20, axes_dims_rope=(4, 6, 6),
    )
    img_ids, txt_ids = _flux_ids(2, 3, 5)
    return model, dict(hidden_states=randn(2, 6, 16), encoder_hidden_states=randn(2, 5, 24), img_ids=img_ids,
                       txt_ids=txt_ids, guidance=torch.full((2,), 3.5), return_dict=False)


def ovis_image():
    from diffusers import OvisImageTransformer2DModel

    seeded()
    model = OvisImageTransformer2DModel(
        patch_size=1, in_channels=16, out_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=16,
        num_attention_heads=2, joint_attention_dim=24, axes_dims_rope=(4, 6, 6),
    )
    img_ids, txt_ids = _flux_ids(2, 3, 5)
    return model, dict(hidden_states=randn(2, 6, 16), encoder_hidden_states=randn(2, 5, 24), img_ids=img_ids,
                       txt_ids=txt_ids, return_dict=False)


def qwen_image():
    from diffusers import QwenImageTransformer2DModel

    seeded()
    model = QwenImageTransformer2DModel(
        patch_size=2, in_channels=16, out_channels=4, num_layers=2, attention_head_dim=16, num_attention_heads=2,
        joint_attention_dim=24, axes_dims_rope=(4, 6, 6),
    )
    return model, dict(hidden_states=randn(2, 6, 16), encoder_hidden_states=randn(2, 5, 24),
                       encoder_hidden_states_mask=torch.ones(2, 5, dtype=torch.long), img_shapes=[[(1, 2, 3)]] * 2,
                       return_dict=False)


def nucleus_moe():
    from diffusers import NucleusMoEImageTransformer2DModel

    seeded()
    model = NucleusMoEImageTransformer2DModel(
        patch_size=2, in_channels=16, out_channels=4, num_layers=2, attention_head_dim=16, num_attention_heads=2,
        joint_attention_dim=24, axes_dims_rope=(4, 6, 6), moe_enabled=False,
    )
    return model, dict(hidden_states=randn(2, 6, 16), encoder_hidden_states=randn(2, 5, 24),
                       encoder_hidden_states_mask=torch.ones(2, 5, dtype=torch.long), img_shapes=[(1, 2, 3)] * 2,
                       return_dict=False)


def sana():
    from diffusers import SanaTransformer2DModel

    seeded()
    model = SanaTransformer2DModel(
        in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=16, num_layers=2,
        num_cross_attention_heads=2, cross_attention_head_dim=16, cross_attention_dim=32, caption_channels=24,
        sample_size=4, patch_size=1,
    )
    return model, dict(hidden_states=randn(2, 4, 4, 6), encoder_hidden_states=randn(2, 5, 24), return_dict=False)


def lumina2():
    from diffusers import Lumina2Transformer2DModel

    seeded()
    model = Lumina2Transformer2DModel(
        sample_size=4, patch_size=2, in_channels=4, hidden_size=32, num_layers=2, num_refiner_layers=1,
        num_attention_heads=2, num_kv_heads=1, multiple_of=16, axes_dim_rope=(4, 6, 6), axes_lens=(32, 32, 32),
        cap_feat_dim=24,
    )
    return model, dict(hidden_states=randn(2, 4, 8, 12), encoder_hidden_states=randn(2, 5, 24),
                       encoder_attention_mask=torch.ones(2, 5, dtype=torch.bool), return_dict=False)


def lumina_next():
    from diffusers import LuminaNextDiT2DModel
    from diffusers.models.embeddings import get_2d_rotary_pos_embed_lumina

    seeded()
    model = LuminaNextDiT2DModel(
        sample_size=8, patch_size=2, in_channels=4, hidden_size=32, num_layers=2, num_attention_heads=2,
        num_kv_heads=1, multiple_of=16, learn_sigma=False, cross_attention_dim=24,
    )
    rope = get_2d_rotary_pos_embed_lumina(16, 384, 384, linear_factor=1.0, ntk_factor=1.0)
    return model, dict(hidden_states=randn(2, 4, 8, 12), encoder_hidden_states=randn(2, 5, 24),
                       encoder_mask=torch.ones(2, 5), image_rotary_emb=rope, cross_attention_kwargs={},
                       return_dict=False)


def z_image():
    from diffusers import ZImageTransformer2DModel

    seeded()
    model = ZImageTransformer2DModel(
        all_patch_size=(2,), all_f_patch_size=(1,), in_channels=4, dim=32, n_layers=2, n_refiner_layers=1, n_heads=2,
        n_kv_heads=2, cap_feat_dim=24, axes_dims=[4, 6, 6], axes_lens=[64, 32, 32],
    )
    return model, dict(x=[randn(4, 1, 8, 12), randn(4, 1, 8, 12, seed=2)], cap_feats=[randn(5, 24), randn(3, 24)],
                       return_dict=False)


def _cogview_sizes(batch=2, h=8, w=12):
    size = torch.tensor([[h * 8, w * 8]] * batch)
    return dict(original_size=size, target_size=size, crop_coords=torch.zeros(batch, 2))


def cogview3plus():
    from diffusers import CogView3PlusTransformer2DModel

    seeded()
    model = CogView3PlusTransformer2DModel(
        patch_size=2, in_channels=4, num_layers=2, attention_head_dim=16, num_attention_heads=2, out_channels=4,
        text_embed_dim=24, time_embed_dim=20, condition_dim=4, pos_embed_max_size=8, sample_size=8,
    )
    return model, dict(hidden_states=randn(2, 4, 8, 12), encoder_hidden_states=randn(2, 5, 24), **_cogview_sizes(),
                       return_dict=False)


def cogview4():
    from diffusers import CogView4Transformer2DModel

    seeded()
    model = CogView4Transformer2DModel(
        patch_size=2, in_channels=4, out_channels=4, num_layers=2, attention_head_dim=16, num_attention_heads=2,
        text_embed_dim=24, time_embed_dim=20, condition_dim=4, rope_axes_dim=(8, 8),
    )
    return model, dict(hidden_states=randn(2, 4, 8, 12), encoder_hidden_states=randn(2, 5, 24), **_cogview_sizes(),
                       return_dict=False)


def glm_image():
    from diffusers import GlmImageTransformer2DModel

    seeded()
    model = GlmImageTransformer2DModel(
        patch_size=2, in_channels=4, out_channels=4, num_layers=2, attention_head_dim=16, num_attention_heads=2,
        text_embed_dim=24, time_embed_dim=20, condition_dim=4, prior_vq_quantizer_codebook_size=64,
    )
    return model, dict(hidden_states=randn(2, 4, 8, 12), encoder_hidden_states=randn(2, 5, 24),
                       prior_token_id=torch.randint(0, 64, (2, 24), generator=_g()),
                       prior_token_drop=torch.zeros(2, dtype=torch.bool),
                       target_size=torch.tensor([[8.0, 12.0]] * 2), crop_coords=torch.zeros(2, 2), return_dict=False)


def hunyuan_dit():
    from diffusers import HunyuanDiT2DModel
    from diffusers.models.embeddings import get_2d_rotary_pos_embed

    seeded()
    model = HunyuanDiT2DModel(
        sample_size=8, patch_size=2, in_channels=4, num_layers=2, attention_head_dim=16, num_attention_heads=2,
        cross_attention_dim=24, cross_attention_dim_t5=40, pooled_projection_dim=20, hidden_size=32,
        text_len=5, text_len_t5=6,
    )
    rope = get_2d_rotary_pos_embed(16, ((0, 0), (4, 6)), (4, 6))
    meta = torch.tensor([[64.0, 96.0, 64.0, 96.0, 0.0, 0.0]] * 2)
    return model, dict(hidden_states=randn(2, 4, 8, 12), encoder_hidden_states=randn(2, 5, 24),
                       text_embedding_mask=torch.ones(2, 5), encoder_hidden_states_t5=randn(2, 6, 40),
                       text_embedding_mask_t5=torch.ones(2, 6), image_meta_size=meta,
                       style=torch.zeros(2, dtype=torch.long), image_rotary_emb=rope, return_dict=False)



# -- video: Wan and its descendants, then the other video DiTs --------------------------------------
# Wan-style latents (batch, channels 4, 2 frames, 8 x 12) are 2 x 4 x 6 patches; inner 2 x 16 = 32, text 24.

_WAN = dict(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=16, in_channels=4, out_channels=4,
            text_dim=24, freq_dim=20, ffn_dim=40, num_layers=2, rope_max_seq_len=32)


def _wan_like(cls_name, latent_channels=4, batch=2, **config):
    import diffusers

    def build():
        seeded()
        model = getattr(diffusers, cls_name)(**{**_WAN, **config})
        return model, dict(hidden_states=randn(batch, latent_channels, 2, 8, 12),
                           encoder_hidden_states=randn(batch, 5, 24), return_dict=False)

    return build


def wan_vace():
    from diffusers import WanVACETransformer3DModel

    seeded()
    model = WanVACETransformer3DModel(**{**_WAN, "num_layers": 4}, vace_layers=[0, 2], vace_in_channels=12)
    return model, dict(hidden_states=randn(2, 4, 2, 8, 12), encoder_hidden_states=randn(2, 5, 24),
                       control_hidden_states=randn(2, 12, 2, 8, 12, seed=2), control_hidden_states_scale=torch.ones(2),
                       return_dict=False)


def helios():
    from diffusers import HeliosTransformer3DModel

    seeded()
    config = {k: v for k, v in _WAN.items() if k != "rope_max_seq_len"}
    model = HeliosTransformer3DModel(**config, rope_dim=(4, 6, 6), has_multi_term_memory_patch=True)
    b, c, h, w = 2, 4, 8, 12
    return model, dict(
        hidden_states=randn(b, c, 2, h, w), encoder_hidden_states=randn(b, 5, 24),
        indices_hidden_states=torch.tensor([[3, 4]] * b), indices_latents_history_short=torch.tensor([[2]] * b),
        indices_latents_history_mid=torch.tensor([[1]] * b), indices_latents_history_long=torch.tensor([[0] * 4] * b),
        latents_history_short=randn(b, c, 1, h, w, seed=2), latents_history_mid=randn(b, c, 1, h, w, seed=3),
        latents_history_long=randn(b, c, 4, h, w, seed=4), return_dict=False,
    )


def anyflow():
    from diffusers import AnyFlowTransformer3DModel

    seeded()
    config = {k: v for k, v in _WAN.items()}
    model = AnyFlowTransformer3DModel(**config)
    # AnyFlow takes (batch, frames, channels, height, width) and a timestep per frame.
    return model, dict(hidden_states=randn(2, 2, 4, 8, 12), r_timestep=torch.full((2, 2), 250.0),
                       encoder_hidden_states=randn(2, 5, 24), return_dict=False)


def anyflow_far():
    from diffusers import AnyFlowFARTransformer3DModel

    seeded()
    model = AnyFlowFARTransformer3DModel(**_WAN, compressed_patch_size=(1, 4, 4), full_chunk_limit=3)
    return model, dict(hidden_states=randn(2, 2, 4, 8, 12), r_timestep=torch.full((2, 2), 250.0),
                       encoder_hidden_states=randn(2, 5, 24), chunk_partition=[1, 1], return_dict=False)


def wan_animate():
    from diffusers import WanAnimateTransformer3DModel

    seeded()
    model = WanAnimateTransformer3DModel(
        **{**_WAN, "in_channels": 12}, latent_channels=4, image_dim=20,
        motion_encoder_channel_sizes={"4": 8, "8": 8, "16": 8},
        motion_encoder_size=16, motion_style_dim=8, motion_dim=4, motion_encoder_dim=8, face_encoder_hidden_dim=16,
        face_encoder_num_heads=2, inject_face_latents_blocks=2,
    )
    # 5 latent frames: the reference image's and 4 to generate; the pose video has those 4, the face video
    # their 3 x 4 + 1 = 13 pixel frames.
    return model, dict(hidden_states=randn(1, 12, 5, 8, 12), encoder_hidden_states=randn(1, 5, 24),
                       encoder_hidden_states_image=randn(1, 3, 20, seed=2),
                       pose_hidden_states=randn(1, 4, 4, 8, 12, seed=3),
                       face_pixel_values=randn(1, 3, 13, 16, 16, seed=4), return_dict=False)


def hunyuan_video():
    from diffusers import HunyuanVideoTransformer3DModel

    seeded()
    model = HunyuanVideoTransformer3DModel(
        in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=16, num_layers=1, num_single_layers=1,
        num_refiner_layers=1, patch_size=1, patch_size_t=1, text_embed_dim=24, pooled_projection_dim=20,
        rope_axes_dim=(4, 6, 6),
    )
    return model, dict(hidden_states=randn(2, 4, 2, 4, 6), encoder_hidden_states=randn(2, 5, 24),
                       encoder_attention_mask=torch.ones(2, 5), pooled_projections=randn(2, 20),
                       guidance=torch.full((2,), 6000.0), return_dict=False)


def hunyuan_video15():
    from diffusers import HunyuanVideo15Transformer3DModel

    seeded()
    model = HunyuanVideo15Transformer3DModel(
        in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=16, num_layers=2,
        num_refiner_layers=1, patch_size=1, patch_size_t=1, text_embed_dim=24, text_embed_2_dim=20,
        image_embed_dim=28, rope_axes_dim=(4, 6, 6), target_size=16, task_type="t2v",
    )
    return model, dict(hidden_states=randn(2, 4, 2, 4, 6), encoder_hidden_states=randn(2, 5, 24),
                       encoder_attention_mask=torch.ones(2, 5), encoder_hidden_states_2=randn(2, 3, 20, seed=2),
                       encoder_attention_mask_2=torch.ones(2, 3), image_embeds=torch.zeros(2, 2, 28), return_dict=False)


def framepack():
    from diffusers import HunyuanVideoFramepackTransformer3DModel

    seeded()
    model = HunyuanVideoFramepackTransformer3DModel(
        in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=16, num_layers=1, num_single_layers=1,
        num_refiner_layers=1, patch_size=2, patch_size_t=1, text_embed_dim=24, pooled_projection_dim=20,
        rope_axes_dim=(4, 6, 6), has_image_proj=True, image_proj_dim=28, has_clean_x_embedder=True,
    )
    b, c, h, w = 2, 4, 8, 12
    return model, dict(
        hidden_states=randn(b, c, 2, h, w), encoder_hidden_states=randn(b, 5, 24),
        encoder_attention_mask=torch.ones(b, 5),
        pooled_projections=randn(b, 20), image_embeds=randn(b, 3, 28, seed=2), indices_latents=torch.tensor([3, 4]),
        guidance=torch.full((b,), 6000.0), latents_clean=randn(b, c, 1, h, w, seed=3),
        indices_latents_clean=torch.tensor([0]), latents_history_2x=randn(b, c, 1, h, w, seed=4),
        indices_latents_history_2x=torch.tensor([1]), latents_history_4x=randn(b, c, 4, h, w, seed=5),
        indices_latents_history_4x=torch.tensor([2, 2, 2, 2]), return_dict=False,
    )


def cogvideox():
    from diffusers import CogVideoXTransformer3DModel

    seeded()
    model = CogVideoXTransformer3DModel(
        num_attention_heads=2, attention_head_dim=16, in_channels=4, out_channels=4, time_embed_dim=12,
        text_embed_dim=24, num_layers=2, sample_width=12, sample_height=8, sample_frames=5, patch_size=2,
        temporal_compression_ratio=4, max_text_seq_length=5,
    )
    return model, dict(hidden_states=randn(2, 2, 4, 8, 12), encoder_hidden_states=randn(2, 5, 24), return_dict=False)


def consisid():
    from diffusers import ConsisIDTransformer3DModel

    seeded()
    model = ConsisIDTransformer3DModel(
        num_attention_heads=2, attention_head_dim=24, in_channels=4, out_channels=4, time_embed_dim=12,
        text_embed_dim=20, num_layers=2, sample_width=12, sample_height=8, sample_frames=5, patch_size=2,
        temporal_compression_ratio=4, max_text_seq_length=5, cross_attn_interval=1, is_kps=False,
        is_train_face=True, cross_attn_dim_head=8, cross_attn_num_heads=2, LFE_id_dim=6, LFE_vit_dim=10,
        LFE_depth=1, LFE_dim_head=8, LFE_num_heads=2, LFE_num_id_token=1, LFE_num_querie=2, LFE_output_dim=32,
        LFE_ff_mult=1, LFE_num_scale=1,
    )
    # Inner 48 (the face cross-attention's key width is two thirds of it, 32), text 20.
    return model, dict(hidden_states=randn(2, 2, 4, 8, 12), encoder_hidden_states=randn(2, 5, 20),
                       id_vit_hidden=[randn(2, 3, 10, seed=2)], id_cond=randn(2, 6, seed=3), return_dict=False)


def cosmos():
    from diffusers import CosmosTransformer3DModel

    seeded()
    model = CosmosTransformer3DModel(
        in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=16, num_layers=2, mlp_ratio=2,
        text_embed_dim=24, adaln_lora_dim=4, max_size=(4, 8, 12), patch_size=(1, 2, 2), rope_scale=(2.0, 1.0, 1.0),
        concat_padding_mask=False, extra_pos_embed_type="learnable",
    )
    return model, dict(hidden_states=randn(2, 4, 2, 8, 12), encoder_hidden_states=randn(2, 5, 24), fps=24,
                       return_dict=False)


def mochi():
    from diffusers import MochiTransformer3DModel

    seeded()
    model = MochiTransformer3DModel(
        patch_size=2, num_attention_heads=2, attention_head_dim=16, num_layers=2, pooled_projection_dim=20,
        in_channels=4, out_channels=4, text_embed_dim=24, time_embed_dim=4, max_sequence_length=16,
    )
    return model, dict(hidden_states=randn(2, 4, 2, 8, 12), encoder_hidden_states=randn(2, 5, 24),
                       encoder_attention_mask=torch.ones(2, 5, dtype=torch.bool), return_dict=False)


def ltx():
    from diffusers import LTXVideoTransformer3DModel

    seeded()
    model = LTXVideoTransformer3DModel(
        in_channels=4, out_channels=4, patch_size=1, patch_size_t=1, num_attention_heads=2, attention_head_dim=16,
        cross_attention_dim=32, num_layers=2, caption_channels=24,
    )
    return model, dict(hidden_states=randn(2, 2 * 4 * 6, 4), encoder_hidden_states=randn(2, 5, 24),
                       encoder_attention_mask=torch.ones(2, 5), num_frames=2, height=4, width=6, return_dict=False)


def ltx2():
    from diffusers import LTX2VideoTransformer3DModel

    seeded()
    model = LTX2VideoTransformer3DModel(
        in_channels=4, out_channels=4, patch_size=1, patch_size_t=1, num_attention_heads=2, attention_head_dim=16,
        cross_attention_dim=32, audio_in_channels=6, audio_out_channels=6, audio_num_attention_heads=2,
        audio_attention_head_dim=8, audio_cross_attention_dim=16, num_layers=2, caption_channels=24,
        rope_double_precision=False,
    )
    return model, dict(hidden_states=randn(2, 2 * 4 * 6, 4), audio_hidden_states=randn(2, 5, 6, seed=2),
                       encoder_hidden_states=randn(2, 5, 24), audio_encoder_hidden_states=randn(2, 5, 24, seed=3),
                       encoder_attention_mask=torch.ones(2, 5), audio_encoder_attention_mask=torch.ones(2, 5),
                       num_frames=2, height=4, width=6, audio_num_frames=5, fps=24.0, return_dict=False)


def allegro():
    from diffusers import AllegroTransformer3DModel

    seeded()
    model = AllegroTransformer3DModel(
        num_attention_heads=2, attention_head_dim=16, in_channels=4, out_channels=4, num_layers=2,
        cross_attention_dim=32, sample_width=12, sample_height=8, sample_frames=8, caption_channels=24,
    )
    return model, dict(hidden_states=randn(2, 4, 2, 8, 12), encoder_hidden_states=randn(2, 5, 24), return_dict=False)


def latte():
    from diffusers import LatteTransformer3DModel

    seeded()
    model = LatteTransformer3DModel(
        num_attention_heads=2, attention_head_dim=16, in_channels=4, out_channels=8, num_layers=2,
        cross_attention_dim=32, sample_size=8, patch_size=2, num_embeds_ada_norm=1000, norm_type="ada_norm_single",
        caption_channels=24, video_length=2,
    )
    return model, dict(hidden_states=randn(2, 4, 2, 8, 12), encoder_hidden_states=randn(2, 5, 24), return_dict=False)


def sana_video():
    from diffusers import SanaVideoTransformer3DModel

    seeded()
    model = SanaVideoTransformer3DModel(
        in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=16, num_layers=2,
        num_cross_attention_heads=2, cross_attention_head_dim=16, cross_attention_dim=32, caption_channels=24,
        sample_size=8, patch_size=(1, 2, 2), rope_max_seq_len=32,
    )
    return model, dict(hidden_states=randn(2, 4, 2, 8, 12), encoder_hidden_states=randn(2, 5, 24), return_dict=False)


def easyanimate():
    from diffusers import EasyAnimateTransformer3DModel

    seeded()
    model = EasyAnimateTransformer3DModel(
        attention_head_dim=16, num_attention_heads=2, in_channels=4, out_channels=4, mmdit_layers=2, num_layers=2,
        patch_size=2, sample_height=8, sample_width=12, text_embed_dim=24, time_embed_dim=20,
        time_position_encoding_type="3d_rope",
    )
    return model, dict(hidden_states=randn(2, 4, 2, 8, 12), encoder_hidden_states=randn(2, 5, 24), return_dict=False)


def motif_video():
    from diffusers import MotifVideoTransformer3DModel

    seeded()
    model = MotifVideoTransformer3DModel(
        in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=16, num_layers=1, num_single_layers=1,
        patch_size=2, patch_size_t=1, text_embed_dim=24, rope_axes_dim=(4, 6, 6),
    )
    return model, dict(hidden_states=randn(2, 4, 2, 8, 12), encoder_hidden_states=randn(2, 5, 24), return_dict=False)


def joyimage():
    from diffusers import JoyImageEditTransformer3DModel

    seeded()
    model = JoyImageEditTransformer3DModel(
        patch_size=[1, 2, 2], in_channels=4, hidden_size=32, num_attention_heads=2, text_dim=24, num_layers=2,
        rope_dim_list=[4, 6, 6],
    )
    return model, dict(hidden_states=randn(2, 4, 1, 8, 12), encoder_hidden_states=randn(2, 5, 24), return_dict=False)



# -- image DiTs with their own input layouts --------------------------------------------------------


def hidream():
    from diffusers import HiDreamImageTransformer2DModel

    seeded()
    # T5 text 24, Llama text 40, pooled 20; a non-square latent takes the padded (masked) path.
    model = HiDreamImageTransformer2DModel(
        patch_size=2, in_channels=4, out_channels=4, num_layers=2, num_single_layers=1, attention_head_dim=16,
        num_attention_heads=2, caption_channels=[24, 40], text_emb_dim=20, num_routed_experts=2,
        num_activated_experts=1, axes_dims_rope=(8, 4, 4), max_resolution=(16, 16), llama_layers=[0, 1, 2],
    )
    return model, dict(hidden_states=randn(2, 4, 8, 12), encoder_hidden_states_t5=randn(2, 5, 24),
                       encoder_hidden_states_llama3=randn(3, 2, 5, 40, seed=2), pooled_embeds=randn(2, 20, seed=3),
                       return_dict=False)


def krea2():
    from diffusers import Krea2Transformer2DModel

    seeded()
    model = Krea2Transformer2DModel(
        in_channels=16, num_layers=2, attention_head_dim=16, num_attention_heads=2, num_key_value_heads=1,
        intermediate_size=40, timestep_embed_dim=12, text_hidden_dim=24, num_text_layers=3, text_num_attention_heads=2,
        text_num_key_value_heads=1, text_intermediate_size=20, num_layerwise_text_blocks=1, num_refiner_text_blocks=1,
        axes_dims_rope=(4, 6, 6),
    )
    text, h, w = 5, 2, 3
    ids = torch.zeros(text + h * w, 3)
    ids[text:, 1] = torch.arange(h).repeat_interleave(w)
    ids[text:, 2] = torch.arange(w).repeat(h)
    return model, dict(hidden_states=randn(2, h * w, 16), encoder_hidden_states=randn(2, text, 3, 24),
                       position_ids=ids, encoder_attention_mask=torch.ones(2, text, dtype=torch.bool),
                       return_dict=False)


def ideogram4():
    from diffusers import Ideogram4Transformer2DModel
    from diffusers.models.transformers import transformer_ideogram4 as m

    seeded()
    model = Ideogram4Transformer2DModel(
        in_channels=16, num_layers=2, attention_head_dim=16, num_attention_heads=2, intermediate_size=40,
        adaln_dim=20, llm_features_dim=24, mrope_section=(4, 2, 2),
    )
    b, text, h, w = 2, 5, 2, 3
    seq = text + h * w
    x = torch.zeros(b, seq, 16)
    x[:, text:] = randn(b, h * w, 16)
    llm = torch.zeros(b, seq, 24)
    llm[:, :text] = randn(b, text, 24, seed=2)
    pos = torch.zeros(b, seq, 3, dtype=torch.long)
    pos[:, :text] = torch.arange(text)[:, None]
    pos[:, text:, 0] = m.IMAGE_POSITION_OFFSET
    pos[:, text:, 1] = torch.arange(h).repeat_interleave(w) + m.IMAGE_POSITION_OFFSET
    pos[:, text:, 2] = torch.arange(w).repeat(h) + m.IMAGE_POSITION_OFFSET
    indicator = torch.full((b, seq), m.OUTPUT_IMAGE_INDICATOR, dtype=torch.long)
    indicator[:, :text] = m.LLM_TOKEN_INDICATOR
    return model, dict(hidden_states=x, encoder_hidden_states=llm, position_ids=pos,
                       segment_ids=torch.ones(b, seq, dtype=torch.long), indicator=indicator, return_dict=False)


def omnigen():
    from diffusers import OmniGenTransformer2DModel

    seeded()
    model = OmniGenTransformer2DModel(
        in_channels=4, patch_size=2, hidden_size=32, num_attention_heads=2, num_key_value_heads=2, intermediate_size=40,
        num_layers=2, pad_token_id=0, vocab_size=100, time_step_dim=12, pos_embed_max_size=16,
        rope_scaling={"long_factor": [1.0] * 8, "short_factor": [1.0] * 8},
    )
    b, text, tokens = 2, 5, 4 * 6
    seq = text + 1 + tokens
    return model, dict(hidden_states=randn(b, 4, 8, 12), input_ids=torch.randint(1, 100, (b, text), generator=_g()),
                       input_img_latents=[], input_image_sizes={}, attention_mask=torch.ones(b, seq, seq),
                       position_ids=torch.arange(seq)[None].expand(b, -1), return_dict=False)


def prx():
    from diffusers import PRXTransformer2DModel

    seeded()
    model = PRXTransformer2DModel(in_channels=4, patch_size=2, context_in_dim=24, hidden_size=32, mlp_ratio=2.0,
                                  num_heads=2, depth=2, axes_dim=[8, 8])
    return model, dict(hidden_states=randn(2, 4, 8, 12), encoder_hidden_states=randn(2, 5, 24), return_dict=False)


def joyimage_edit_plus():
    from diffusers import JoyImageEditPlusTransformer3DModel

    seeded()
    model = JoyImageEditPlusTransformer3DModel(
        patch_size=[1, 2, 2], in_channels=4, hidden_size=32, num_attention_heads=2, text_dim=24, num_layers=2,
        rope_dim_list=[4, 6, 6],
    )
    # (batch, tokens, channels, 1, 2, 2): the target and one reference image, each 1 x 2 x 3 patches.
    return model, dict(hidden_states=randn(2, 12, 4, 1, 2, 2), encoder_hidden_states=randn(2, 5, 24),
                       shape_list=[[(1, 2, 3), (1, 2, 3)]] * 2, return_dict=False)


# -- audio and audio-video DiTs ---------------------------------------------------------------------


def longcat_audio():
    from diffusers import LongCatAudioDiTTransformer

    seeded()
    model = LongCatAudioDiTTransformer(dit_dim=32, dit_depth=2, dit_heads=2, dit_text_dim=24, latent_dim=8,
                                       text_conv=False)
    return model, dict(hidden_states=randn(2, 14, 8), encoder_hidden_states=randn(2, 5, 24),
                       encoder_attention_mask=torch.ones(2, 5, dtype=torch.bool),
                       attention_mask=torch.ones(2, 14, dtype=torch.bool), return_dict=False)


def ace_step():
    from diffusers import AceStepTransformer1DModel

    seeded()
    # acoustic 8 (latent and 2 x 8 of context latents: in_channels 24), inner 4 x 8 = 32 = hidden, text 20.
    model = AceStepTransformer1DModel(
        hidden_size=32, intermediate_size=40, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        head_dim=8, in_channels=24, audio_acoustic_hidden_dim=8, patch_size=2, sliding_window=8,
        encoder_hidden_size=20,
    )
    return model, dict(hidden_states=randn(2, 14, 8), encoder_hidden_states=randn(2, 5, 20),
                       context_latents=randn(2, 14, 16, seed=2), return_dict=False)


def minimax_h3():
    from diffusers import MiniMaxH3Transformer3DModel

    seeded()
    model = MiniMaxH3Transformer3DModel(
        num_attention_heads=2, attention_head_dim=16, hidden_size=24, num_layers=2, num_refiner_layers=1, ffn_dim=40,
        in_channels=4, audio_in_channels=6, patch_size=(1, 2, 2), text_dim=20, freq_dim=8, time_embed_hidden_dim=24,
        time_embed_dim=12, rope_freq_dim=2,
    )
    text, audio, video = 5, 6, 2 * 2 * 3
    seq = text + audio + video
    text_i, audio_i = torch.arange(text), torch.arange(text, text + audio)
    video_i = torch.arange(text + audio, seq)
    tags = torch.zeros(seq, dtype=torch.long)
    tags[text_i], tags[audio_i] = 1, 2
    t_index = torch.zeros(seq, dtype=torch.long)
    t_index[audio_i] = 1
    pos = torch.zeros(seq, 3)
    pos[:, 0] = torch.arange(seq)
    grid = torch.arange(video)
    pos[video_i, 1], pos[video_i, 2] = (grid // 3 % 2).float(), (grid % 3).float()
    return model, dict(hidden_states=randn(2, video, 16), audio_hidden_states=randn(2, audio, 6, seed=2),
                       encoder_hidden_states=randn(2, text, 20, seed=3), timestep_indices=t_index, token_tags=tags,
                       position_ids=pos, video_indices=video_i, audio_indices=audio_i, text_indices=text_i,
                       return_dict=False)



# -- heads by other names: final_norm, proj_out, out_layer, head, norm_moe_gen ----------------------


def ernie_image():
    from diffusers import ErnieImageTransformer2DModel

    seeded()
    model = ErnieImageTransformer2DModel(
        hidden_size=32, num_attention_heads=2, num_layers=2, ffn_hidden_size=40, in_channels=16, out_channels=16,
        patch_size=1, text_in_dim=24, rope_axes_dim=(4, 6, 6),
    )
    return model, dict(hidden_states=randn(2, 16, 4, 6), text_bth=randn(2, 5, 24), text_lens=torch.tensor([5, 3]),
                       return_dict=False)


def stable_audio():
    from diffusers import StableAudioDiTModel
    from diffusers.models.embeddings import get_1d_rotary_pos_embed

    seeded()
    # latent 8 channels, inner 2 x 16 = 32, cross-attention 28 from text 24, global 20.
    model = StableAudioDiTModel(
        sample_size=16, in_channels=8, num_layers=2, attention_head_dim=16, num_attention_heads=2,
        num_key_value_attention_heads=1, out_channels=8, cross_attention_dim=28, time_proj_dim=12,
        global_states_input_dim=20, cross_attention_input_dim=24,
    )
    rope = get_1d_rotary_pos_embed(8, 14 + 1, use_real=True, repeat_interleave_real=False)
    return model, dict(hidden_states=randn(2, 8, 14), encoder_hidden_states=randn(2, 5, 24),
                       global_hidden_states=randn(2, 1, 20, seed=2), rotary_embedding=rope, return_dict=False)


def stable_audio3():
    from diffusers import StableAudio3DiTModel

    seeded()
    model = StableAudio3DiTModel(
        io_channels=8, patch_size=1, embed_dim=32, depth=2, num_heads=2, cond_token_dim=24, global_cond_dim=20,
        local_add_cond_dim=5, timestep_features_dim=12, ff_mult=2, num_memory_tokens=3,
        use_differential_attention=False,
    )
    return model, dict(hidden_states=randn(2, 8, 14), encoder_hidden_states=randn(2, 5, 24),
                       global_hidden_states=randn(2, 20, seed=2), return_dict=False)


def minimax_music3():
    from diffusers import MiniMaxMusic3Transformer1DModel

    seeded()
    model = MiniMaxMusic3Transformer1DModel(
        in_channels=8, condition_dim=24, num_layers=2, num_attention_heads=2, attention_head_dim=16, ff_inner_dim=40,
        rotary_dim=4, fourier_embedding_dim=12,
    )
    return model, dict(hidden_states=randn(2, 8, 14), encoder_hidden_states=randn(2, 14, 24), return_dict=False)


_KANDINSKY = dict(patch_size=(1, 2, 2), num_visual_blocks=2, axes_dims=(4, 6, 6))


def kandinsky5():
    from diffusers import Kandinsky5Transformer3DModel

    seeded()
    # latent 4, inner (model_dim) 48, text 24, pooled 20; hidden_states are (batch, frames, height, width, channels).
    model = Kandinsky5Transformer3DModel(
        in_visual_dim=4, out_visual_dim=4, in_text_dim=24, in_text_dim2=20, time_dim=12, model_dim=48, ff_dim=40,
        num_text_blocks=1, **_KANDINSKY,
    )
    return model, dict(hidden_states=randn(2, 2, 8, 12, 4), encoder_hidden_states=randn(2, 5, 24),
                       pooled_projections=randn(2, 20, seed=2),
                       visual_rope_pos=(torch.arange(2), torch.arange(4), torch.arange(6)),
                       text_rope_pos=torch.arange(5), return_dict=False)


def kandinsky6():
    from diffusers import Kandinsky6Transformer3DModel

    seeded()
    model = Kandinsky6Transformer3DModel(
        in_visual_dim=4, out_visual_dim=4, in_text_dim=24, in_text_dim2=20, time_dim=12, model_dim=48, ff_dim=40,
        num_text_blocks=1, visual_cond=False, in_audio_dim=6, out_audio_dim=6, model_dim_a=32, time_dim_a=12,
        ff_dim_a=40, axes_dims_a=(16,), **_KANDINSKY,
    )
    return model, dict(hidden_states=randn(2, 2, 8, 12, 4), encoder_hidden_states=randn(2, 5, 24),
                       pooled_projections=randn(2, 20, seed=2), audio_hidden_states=randn(2, 7, 6, seed=3),
                       return_dict=False)


def kandinsky6_sr():
    from diffusers import Kandinsky6SRTransformer3DModel

    seeded()
    # NABLA attention works on 8 x 8 token tiles: 8 x 16 tokens.
    model = Kandinsky6SRTransformer3DModel(
        in_visual_dim=4, out_visual_dim=4, time_dim=12, patch_size=(1, 1, 1), model_dim=48, ff_dim=40,
        num_visual_blocks=2, axes_dims=(4, 6, 14), nabla_window=(3, 3, 3),
    )
    # The input is the noisy latent, the low-resolution latent and a mask: 2 x 4 + 1 channels.
    return model, dict(hidden_states=randn(1, 2, 8, 16, 9), return_dict=False)


def wan_animate2():
    from diffusers import WanAnimate2Transformer3DModel
    from diffusers.models.transformers.transformer_wan_animate_2 import WanAnimate2KVCache

    seeded()
    # latent 4 + condition 6, inner 32, text 24 (CLIP image features are 1280 wide in MLPProj).
    model = WanAnimate2Transformer3DModel(
        patch_size=(1, 2, 2), text_len=8, in_dim=10, dim=32, ffn_dim=40, freq_dim=12, text_dim=24, out_dim=4,
        num_heads=2, num_layers=2,
    )
    h, w, ref, gen = 4, 6, 2, 3
    cache = WanAnimate2KVCache(2)
    with torch.no_grad():  # the reference pass fills the KV cache once, before denoising (kv_cache_mode "extract")
        model(hidden_states=[randn(4, ref, h, w, seed=5)], timestep=torch.tensor([0.0]),
              encoder_hidden_states=[randn(5, 24, seed=2)], condition_latents=[randn(6, ref, h, w, seed=6)],
              encoder_hidden_states_image=randn(1, 3, 1280, seed=4), kv_cache=cache, kv_cache_mode="extract",
              seq_len=ref * 6, offset_grid_sizes=torch.tensor([[ref, h // 2, w // 2]]))
    return model, dict(
        hidden_states=[randn(4, gen, h, w)], encoder_hidden_states=[randn(5, 24, seed=2)],
        condition_latents=[randn(6, gen, h, w, seed=3)], encoder_hidden_states_image=randn(1, 3, 1280, seed=4),
        kv_cache=cache, kv_cache_mode="cached", seq_len=gen * 6,
        reference_grid_sizes=torch.tensor([[ref, h // 2, w // 2]]), origin_len=(gen - 1) * 4, origin_area=[32, 48],
        return_dict=False,
    )


def cosmos3():
    from diffusers import Cosmos3OmniTransformer

    seeded()
    # latent 4 (patched 2 x 2 into 16), inner 2 x 12 = 24 (hidden 32), text tokens.
    model = Cosmos3OmniTransformer(
        head_dim=12, hidden_act="relu2", hidden_size=32, intermediate_size=40, latent_channel=4, latent_patch_size=2,
        num_attention_heads=2, num_hidden_layers=2, num_key_value_heads=1, patch_latent_dim=16,
        qk_norm_for_text=False, rope_axes_dim=[2, 2, 2], vocab_size=32,
    )
    text, t, h, w = 3, 2, 4, 6
    tokens = t * (h // 2) * (w // 2)
    seq = text + tokens
    vision = torch.arange(text, seq)
    return model, dict(
        input_ids=torch.tensor([1, 2, 3]), text_indexes=torch.arange(text),
        position_ids=torch.zeros(3, seq, dtype=torch.long), und_len=text, sequence_length=seq,
        vision_tokens=[randn(1, 4, t, h, w)], vision_token_shapes=[(t, h // 2, w // 2)],
        vision_sequence_indexes=vision, vision_mse_loss_indexes=vision,
        vision_noisy_frame_indexes=[torch.arange(t)], return_dict=False,
    )



# -- the newest image DiTs (no model test in diffusers): configs from their __init__ and forward ----


def flux3():
    from diffusers import Flux3Transformer2DModel

    seeded()
    model = Flux3Transformer2DModel(
        in_channels=16, cond_in_channels=12, num_layers=1, num_single_layers=1, attention_head_dim=16,
        num_attention_heads=2, joint_attention_dim=24, timestep_channels=20, mlp_ratio=2.0, axes_dims_rope=(4, 4, 4, 4),
    )
    img_ids, txt_ids = _flux2_ids(2, 3, 5)
    cond_ids = img_ids[0].clone()
    cond_ids[:, 0] = 1  # the condition image is the next "frame"
    return model, dict(hidden_states=randn(2, 6, 16), encoder_hidden_states=randn(2, 5, 24), img_ids=img_ids[0],
                       txt_ids=txt_ids[0], image_cond_hidden_states=randn(2, 6, 12, seed=2), image_cond_ids=cond_ids,
                       return_dict=False)


def qwen_image21():
    from diffusers import QwenImage21Transformer2DModel

    seeded()
    model = QwenImage21Transformer2DModel(
        patch_size=1, in_channels=16, out_channels=16, num_layers=2, attention_head_dim=16, num_attention_heads=2,
        context_in_dim=24, mlp_ratio=2, axes_dims_rope=(4, 6, 6),
    )
    b, text, h, w = 2, 5, 4, 6
    # The joint sequence: the text tokens, then one slot per 2 x 2 group of the target's h x w tokens.
    img_mask = torch.cat([torch.zeros(b, text, dtype=torch.bool), torch.ones(b, h * w // 4, dtype=torch.bool)], 1)
    return model, dict(hidden_states=randn(b, h * w, 16), encoder_hidden_states=randn(b, text, 24),
                       encoder_hidden_states_mask=torch.ones(b, text, dtype=torch.long), img_shapes=[[(1, h, w)]] * b,
                       img_mask=img_mask, return_dict=False)



def hunyuan_image():
    from diffusers import HunyuanImageTransformer2DModel

    seeded()
    # latent 4, inner 32, text 24, glyph (ByT5) text 20.
    model = HunyuanImageTransformer2DModel(
        in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=16, num_layers=1, num_single_layers=1,
        num_refiner_layers=1, patch_size=(1, 1), text_embed_dim=24, text_embed_2_dim=20, rope_axes_dim=(8, 8),
    )
    return model, dict(hidden_states=randn(2, 4, 4, 6), encoder_hidden_states=randn(2, 5, 24),
                       encoder_attention_mask=torch.ones(2, 5), encoder_hidden_states_2=randn(2, 3, 20, seed=2),
                       encoder_attention_mask_2=torch.ones(2, 3), return_dict=False)


def bria_fibo2():
    from diffusers import BriaFibo2Transformer2DModel

    seeded()
    # latent 4 (patch 2), inner 32, text 24 in 1 + 1 bundles (the prompt and one injected layer).
    model = BriaFibo2Transformer2DModel(
        in_channels=4, patch_size=2, dim=32, n_layers=2, n_refiner_layers=1, n_heads=2, cap_feat_dim=24,
        injection_layer_ids=(1,), perceiver_num_layers=1, min_num_gist_tokens=2, max_num_gist_tokens=4, gist_step=2,
        gist_min_text_len=2, gist_max_text_len=8, axes_dims=(4, 6, 6), axes_lens=(64, 32, 32),
    )
    return model, dict(hidden_states=randn(2, 4, 8, 12), encoder_hidden_states=randn(2, 2, 5, 24),
                       encoder_attention_mask=torch.tensor([[True] * 5, [True] * 3 + [False] * 2]), return_dict=False)



def sana_wm():
    from diffusers import SanaWMTransformer3DModel

    seeded()
    # latent 4, inner 32 (linear-attention heads of 16), caption 24; no camera conditioning.
    model = SanaWMTransformer3DModel(
        in_channels=4, num_layers=2, hidden_size=32, num_attention_heads=2, softmax_every_n=2, linear_head_dim=16,
        caption_channels=24, use_chunk_plucker_post_attn=False, chunk_plucker_post_attn_blocks=0, mlp_ratio=2.0,
        mixed_precision="fp32",
    )
    return model, dict(hidden_states=randn(2, 4, 2, 8, 12), encoder_hidden_states=randn(2, 1, 5, 24),
                       encoder_attention_mask=torch.ones(2, 5, dtype=torch.long), return_dict=False)


def sana_wm_refiner():
    from diffusers import SanaWMLTX2RefinerTransformer3DModel

    seeded()
    model = SanaWMLTX2RefinerTransformer3DModel(
        in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=16, cross_attention_dim=32,
        audio_in_channels=6, audio_out_channels=6, audio_num_attention_heads=2, audio_attention_head_dim=8,
        audio_cross_attention_dim=16, num_layers=2, caption_channels=24, rope_double_precision=False,
    )
    rope = model.build_rotary_emb_for_absolute_positions(batch_size=2, frame_positions=[0, 1], height=4, width=6,
                                                          device=torch.device("cpu"), fps=24.0)
    return model, dict(hidden_states=randn(2, 2 * 4 * 6, 4), encoder_hidden_states=randn(2, 5, 24),
                       video_rotary_emb=rope, encoder_attention_mask=torch.ones(2, 5), return_dict=False)



def t5_film():
    from diffusers import T5FilmDecoder

    seeded()
    # spectrogram bins 8, inner 2 x 16 = 32 (d_model 24), encoder width d_model.
    model = T5FilmDecoder(input_dims=8, targets_length=14, d_model=24, num_layers=2, num_heads=2, d_kv=16, d_ff=40,
                          dropout_rate=0.0)
    encodings = [(randn(2, 5, 24, seed=2), torch.ones(2, 5, dtype=torch.bool))]
    return model, dict(decoder_input_tokens=randn(2, 14, 8), encodings_and_masks=encodings)



def rfd4_proteina():
    from diffusers import RFD4ProteinaTransformer

    seeded()
    # 10 residues: backbone coordinates (3) and local latents 8; tokens 32, pairs 16, condition 20.
    model = RFD4ProteinaTransformer(
        nlayers=2, token_dim=32, nheads=2, dim_cond=20, pair_repr_dim=16, latent_dim=8, token_type_emb_dim=8,
        cath_emb_dim=8, t_emb_dim=12, seq_sep_dim=8, xt_pair_dist_dim=6, tri_mult_c=8,
        feats_seq=("xt_bb_ca", "xt_local_latents", "token_type"),
        feats_cond_seq=("time_emb_bb_ca", "time_emb_local_latents"),
        feats_pair_repr=("xt_bb_ca_pair_dists",), feats_pair_cond=("time_emb_bb_ca", "time_emb_local_latents"),
    )
    b, n = 2, 10
    masks = {"is_in_context_conditioning": torch.zeros(b, n, dtype=torch.bool),
             "supports_local_latent": torch.ones(b, n, dtype=torch.bool)}
    return model, dict(bb_ca=randn(b, n, 3), local_latents=randn(b, n, 8, seed=2),
                       padding_mask=torch.ones(b, n, dtype=torch.bool), token_type=torch.zeros(b, n, dtype=torch.long),
                       atom37_mask=torch.ones(b, n, 37, dtype=torch.bool), conditioning=masks, return_dict=False)



# -- the other UNets of diffusers.models.unets ----------------------------------------------------
# Blocks of 16 and 32 channels (8 norm groups), latent 4, text 24; latents 8 x 12, two frames for video.

_UNET = dict(block_out_channels=(16, 32), layers_per_block=1, norm_num_groups=8)


def unet_2d():
    from diffusers import UNet2DModel

    seeded()
    model = UNet2DModel(in_channels=4, out_channels=4, down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                        up_block_types=("AttnUpBlock2D", "UpBlock2D"), attention_head_dim=8, **_UNET)
    return model, dict(sample=randn(2, 4, 8, 12), return_dict=False)


def unet_1d():
    from diffusers import UNet1DModel

    seeded()
    # Dance Diffusion's layout: 2 audio channels and 32 Fourier time features concatenated to them.
    model = UNet1DModel(
        block_out_channels=(16, 32, 32), in_channels=2, out_channels=2, extra_in_channels=32, sample_size=64,
        down_block_types=("DownBlock1DNoSkip", "DownBlock1D", "AttnDownBlock1D"),
        up_block_types=("AttnUpBlock1D", "UpBlock1D", "UpBlock1DNoSkip"), mid_block_type="UNetMidBlock1D",
        time_embedding_type="fourier", flip_sin_to_cos=True, use_timestep_embedding=False,
    )
    return model, dict(sample=randn(2, 2, 64), return_dict=False)


def unet_3d():
    from diffusers import UNet3DConditionModel

    seeded()
    model = UNet3DConditionModel(
        in_channels=4, out_channels=4, down_block_types=("CrossAttnDownBlock3D", "DownBlock3D"),
        up_block_types=("UpBlock3D", "CrossAttnUpBlock3D"), cross_attention_dim=24, attention_head_dim=8, **_UNET,
    )
    return model, dict(sample=randn(2, 4, 2, 8, 12), encoder_hidden_states=randn(2, 5, 24), return_dict=False)


def unet_motion():
    from diffusers import UNetMotionModel

    seeded()
    model = UNetMotionModel(
        in_channels=4, out_channels=4, down_block_types=("CrossAttnDownBlockMotion", "DownBlockMotion"),
        up_block_types=("UpBlockMotion", "CrossAttnUpBlockMotion"), cross_attention_dim=24, num_attention_heads=2,
        motion_num_attention_heads=2, motion_max_seq_length=8, **_UNET,
    )
    # AnimateDiff passes the prompt once per frame: (batch x frames, tokens, width).
    return model, dict(sample=randn(2, 4, 2, 8, 12), encoder_hidden_states=randn(4, 5, 24), return_dict=False)


def unet_svd():
    from diffusers import UNetSpatioTemporalConditionModel

    seeded()
    # Stable Video Diffusion: (batch, frames, channels, h, w), the noisy latent and the image latent (8 channels);
    # the CLIP image embedding is one token of 24; three added time ids of 4 features.
    model = UNetSpatioTemporalConditionModel(
        block_out_channels=(32, 64), layers_per_block=1, in_channels=8, out_channels=4,
        down_block_types=("CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"),
        up_block_types=("UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"), cross_attention_dim=24,
        num_attention_heads=(2, 4), addition_time_embed_dim=4, projection_class_embeddings_input_dim=12,
    )
    return model, dict(sample=randn(2, 2, 8, 8, 12), encoder_hidden_states=randn(2, 1, 24),
                       added_time_ids=torch.tensor([[6.0, 127.0, 0.02]] * 2), return_dict=False)


def i2vgen_xl():
    from diffusers import I2VGenXLUNet

    seeded()
    model = I2VGenXLUNet(in_channels=4, out_channels=4, down_block_types=("CrossAttnDownBlock3D", "DownBlock3D"),
                         up_block_types=("UpBlock3D", "CrossAttnUpBlock3D"), cross_attention_dim=24,
                         attention_head_dim=8, **_UNET)
    return model, dict(sample=randn(2, 4, 2, 8, 12), fps=torch.tensor([16, 16]),
                       image_latents=randn(2, 4, 2, 8, 12, seed=2),
                       image_embeddings=randn(2, 24, seed=3), encoder_hidden_states=randn(2, 5, 24, seed=4),
                       return_dict=False)


def kandinsky3():
    from diffusers import Kandinsky3UNet

    seeded()
    # Its blocks need two layers or more (with one, the up path's widths do not meet).
    model = Kandinsky3UNet(in_channels=4, time_embedding_dim=20, groups=8, attention_head_dim=8, layers_per_block=2,
                           block_out_channels=(16, 32), cross_attention_dim=32, encoder_hid_dim=24)
    return model, dict(sample=randn(2, 4, 8, 12), encoder_hidden_states=randn(2, 5, 24),
                       encoder_attention_mask=torch.ones(2, 5), return_dict=False)


def stable_cascade():
    from diffusers import StableCascadeUNet

    seeded()
    # The decoder's layout (effnet features), two levels of 16 and 32 channels; pooled CLIP text 20.
    model = StableCascadeUNet(
        in_channels=4, out_channels=4, timestep_ratio_embedding_dim=8, patch_size=2, conditioning_dim=32,
        block_out_channels=(16, 32), num_attention_heads=(2, 2), down_num_layers_per_block=(1, 1),
        up_num_layers_per_block=(1, 1), down_blocks_repeat_mappers=(1, 1), up_blocks_repeat_mappers=(1, 1),
        block_types_per_layer=(("SDCascadeResBlock", "SDCascadeTimestepBlock"),
                               ("SDCascadeResBlock", "SDCascadeTimestepBlock", "SDCascadeAttnBlock")),
        clip_text_pooled_in_channels=20, clip_seq=2, effnet_in_channels=6, dropout=(0.0, 0.0),
        timestep_conditioning_type=("sca",),
    )
    return model, dict(sample=randn(2, 4, 8, 12), clip_text_pooled=randn(2, 1, 20),
                       effnet=randn(2, 6, 4, 6, seed=2), return_dict=False)


DENOISERS: list[Denoiser] = [
    Denoiser("UNet2DConditionModel", unet, latent="sample"),
    Denoiser("DreamLiteUNetModel", dreamlite_unet, latent="sample"),
    Denoiser("UNet2DModel", unet_2d, latent="sample"),
    # Dance Diffusion's UNet has no output head: its last up block writes the sample.
    Denoiser("UNet1DModel", unet_1d, latent="sample", scale=1.0, reason="no output head found"),
    Denoiser("UNet3DConditionModel", unet_3d, latent="sample"),
    Denoiser("UNetMotionModel", unet_motion, latent="sample"),
    Denoiser("UNetSpatioTemporalConditionModel", unet_svd, latent="sample", scale=1.0),
    Denoiser("I2VGenXLUNet", i2vgen_xl, latent="sample"),
    Denoiser("Kandinsky3UNet", kandinsky3, latent="sample"),
    # Stable Cascade's timestep is a ratio in [0, 1].
    Denoiser("StableCascadeUNet", stable_cascade, latent="sample", timestep="timestep_ratio", scale=1.0),
    Denoiser("DiTTransformer2DModel", dit),
    Denoiser("PixArtTransformer2DModel", pixart),
    Denoiser("Transformer2DModel", transformer_2d),
    Denoiser("SD3Transformer2DModel", sd3),
    Denoiser("AuraFlowTransformer2DModel", auraflow),
    Denoiser("FluxTransformer2DModel", flux, scale=1.0),
    Denoiser("Flux2Transformer2DModel", flux2, scale=1.0),
    Denoiser("ChromaTransformer2DModel", chroma, scale=1.0),
    Denoiser("BriaTransformer2DModel", bria),
    Denoiser("BriaFiboTransformer2DModel", bria_fibo),
    Denoiser("LongCatImageTransformer2DModel", longcat_image, scale=1.0),
    Denoiser("OvisImageTransformer2DModel", ovis_image, scale=1.0),
    Denoiser("QwenImageTransformer2DModel", qwen_image, scale=1.0),
    Denoiser("NucleusMoEImageTransformer2DModel", nucleus_moe, scale=1.0),
    Denoiser("SanaTransformer2DModel", sana),
    Denoiser("Lumina2Transformer2DModel", lumina2, scale=1.0),
    Denoiser("LuminaNextDiT2DModel", lumina_next, scale=1.0),
    Denoiser("ZImageTransformer2DModel", z_image, latent="x", timestep="t", scale=1.0,
             make_t=lambda t, x: torch.full((len(x),), t)),
    Denoiser("CogView3PlusTransformer2DModel", cogview3plus),
    Denoiser("CogView4Transformer2DModel", cogview4),
    Denoiser("GlmImageTransformer2DModel", glm_image),
    Denoiser("HunyuanDiT2DModel", hunyuan_dit),
    Denoiser("WanTransformer3DModel", _wan_like("WanTransformer3DModel")),
    Denoiser("SkyReelsV2Transformer3DModel", _wan_like("SkyReelsV2Transformer3DModel")),
    Denoiser("ChronoEditTransformer3DModel", _wan_like("ChronoEditTransformer3DModel", rope_temporal_skip_len=8)),
    Denoiser("WanVACETransformer3DModel", wan_vace),
    Denoiser("HeliosTransformer3DModel", helios),
    Denoiser("AnyFlowTransformer3DModel", anyflow, make_t=lambda t, x: torch.full(x.shape[:2], t)),
    Denoiser("AnyFlowFARTransformer3DModel", anyflow_far, make_t=lambda t, x: torch.full(x.shape[:2], t)),
    Denoiser("WanAnimateTransformer3DModel", wan_animate),
    Denoiser("HunyuanVideoTransformer3DModel", hunyuan_video),
    Denoiser("HunyuanVideo15Transformer3DModel", hunyuan_video15),
    Denoiser("HunyuanVideoFramepackTransformer3DModel", framepack),
    Denoiser("CogVideoXTransformer3DModel", cogvideox),
    Denoiser("ConsisIDTransformer3DModel", consisid),
    Denoiser("CosmosTransformer3DModel", cosmos, scale=1.0),
    Denoiser("MochiTransformer3DModel", mochi),
    Denoiser("LTXVideoTransformer3DModel", ltx),
    Denoiser("LTX2VideoTransformer3DModel", ltx2),
    Denoiser("AllegroTransformer3DModel", allegro),
    Denoiser("LatteTransformer3DModel", latte),
    Denoiser("SanaVideoTransformer3DModel", sana_video),
    Denoiser("EasyAnimateTransformer3DModel", easyanimate),
    Denoiser("MotifVideoTransformer3DModel", motif_video),
    Denoiser("JoyImageEditTransformer3DModel", joyimage),
    Denoiser("HiDreamImageTransformer2DModel", hidream, timestep="timesteps"),
    Denoiser("Krea2Transformer2DModel", krea2, scale=1.0),
    Denoiser("Ideogram4Transformer2DModel", ideogram4, scale=1.0),
    Denoiser("OmniGenTransformer2DModel", omnigen, scale=1.0),
    Denoiser("PRXTransformer2DModel", prx, scale=1.0),
    Denoiser("JoyImageEditPlusTransformer3DModel", joyimage_edit_plus),
    Denoiser("LongCatAudioDiTTransformer", longcat_audio, scale=1.0),
    # ACEStepPipeline passes timestep_r = timestep.
    Denoiser("AceStepTransformer1DModel", ace_step, scale=1.0,
             make_t=lambda t, x: {"timestep": torch.full((2,), t), "timestep_r": torch.full((2,), t)}),
    # Two noise levels (video, audio) in one call, addressed per token by timestep_indices.
    Denoiser("MiniMaxH3Transformer3DModel", minimax_h3, scale=1.0, make_t=lambda t, x: torch.tensor([t, t / 2])),
    Denoiser("ErnieImageTransformer2DModel", ernie_image),
    Denoiser("StableAudioDiTModel", stable_audio),
    Denoiser("StableAudio3DiTModel", stable_audio3, scale=1.0),
    Denoiser("MiniMaxMusic3Transformer1DModel", minimax_music3, scale=1.0),
    Denoiser("Kandinsky5Transformer3DModel", kandinsky5, scale=1.0),
    Denoiser("Kandinsky6Transformer3DModel", kandinsky6, scale=1.0),
    Denoiser("Kandinsky6SRTransformer3DModel", kandinsky6_sr, scale=1.0),
    Denoiser("WanAnimate2Transformer3DModel", wan_animate2,
             make_t=lambda t, x: torch.tensor([t])),
    Denoiser("Flux3Transformer2DModel", flux3, scale=1.0),
    Denoiser("QwenImage21Transformer2DModel", qwen_image21, scale=1.0),
    Denoiser("HunyuanImageTransformer2DModel", hunyuan_image),
    Denoiser("BriaFibo2Transformer2DModel", bria_fibo2, scale=1.0),
    # SanaWMPipeline passes one timestep per latent frame, (batch, 1, frames).
    Denoiser("SanaWMTransformer3DModel", sana_wm, make_t=lambda t, x: torch.full((x.shape[0], 1, x.shape[2]), t)),
    # The refiner takes one timestep per token.
    Denoiser("SanaWMLTX2RefinerTransformer3DModel", sana_wm_refiner, scale=1.0,
             make_t=lambda t, x: torch.full(x.shape[:2], t)),
    # SpectrogramDiffusionPipeline's times are in [0, 1).
    Denoiser("T5FilmDecoder", t5_film, latent="decoder_input_tokens", timestep="decoder_noise_time", scale=0.999),
    # RFD4ProteinaPipeline's times run from 0 (noise) to 1; both trajectories share them here.
    Denoiser("RFD4ProteinaTransformer", rfd4_proteina, latent="bb_ca", scale=1.0,
             make_t=lambda t, x: {"bb_ca_time": torch.full((2,), 1 - t),
                                  "local_latents_time": torch.full((2,), 1 - t)}),
    Denoiser("Cosmos3OmniTransformer", cosmos3, latent="vision_tokens", timestep="vision_timesteps",
             make_t=lambda t, x: torch.full((x[0].shape[2] * (x[0].shape[3] // 2) * (x[0].shape[4] // 2),), t)),
]
