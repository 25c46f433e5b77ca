"""A tiny text encoder trained jointly with the denoiser.

It plays the role of FLUX.1's T5 (token sequence -> `encoder_hidden_states`) and CLIP (pooled vector
-> `pooled_projections`) at once. As a diffusers ModelMixin + ConfigMixin it saves and loads with
save_pretrained / from_pretrained like any other pipeline component.
"""

from __future__ import annotations

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn


class TinyTextEncoder(ModelMixin, ConfigMixin):
    """Token embeddings + learned positions + a few pre-norm transformer layers.

    forward(input_ids) returns (sequence (B, L, joint_attention_dim), pooled (B, pooled_projection_dim)).
    Padding (id `pad_token_id`) is masked out of attention and of the pooled mean; position 0 is always
    the BOS token, so an empty caption (the unconditional branch of CFG) still has one valid token.
    """

    @register_to_config
    def __init__(
        self,
        vocab_size: int = 32,
        max_length: int = 24,
        hidden_dim: int = 128,
        num_layers: int = 2,
        num_heads: int = 4,
        joint_attention_dim: int = 128,
        pooled_projection_dim: int = 128,
        pad_token_id: int = 0,
    ) -> None:
        super().__init__()
        self.token_embedding = nn.Embedding(vocab_size, hidden_dim)
        self.position_embedding = nn.Parameter(torch.zeros(1, max_length, hidden_dim))
        nn.init.normal_(self.position_embedding, std=0.02)
        layer = nn.TransformerEncoderLayer(
            hidden_dim, num_heads, dim_feedforward=2 * hidden_dim, dropout=0.0, batch_first=True, norm_first=True
        )
        self.layers = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(hidden_dim)
        self.sequence_proj = nn.Linear(hidden_dim, joint_attention_dim)
        self.pooled_proj = nn.Linear(hidden_dim, pooled_projection_dim)

    def forward(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode (B, L) token ids into the sequence and pooled embeddings."""
        pad = input_ids == self.config.pad_token_id
        x = self.token_embedding(input_ids) + self.position_embedding[:, : input_ids.shape[1]]
        x = self.norm(self.layers(x, src_key_padding_mask=pad))
        keep = (~pad).unsqueeze(-1).to(x.dtype)
        pooled = (x * keep).sum(1) / keep.sum(1).clamp(min=1.0)
        # Zero the padded positions so the DiT sees the same sequence whatever the pad embedding learns.
        return self.sequence_proj(x) * keep, self.pooled_proj(pooled)
