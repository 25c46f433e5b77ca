"""integrations.arguments: a module call's arguments by name, as the denoiser's hook binds them."""

from __future__ import annotations

import torch

from spectrum_cache.integrations.arguments import bind_arguments, forward_signature


class _Model(torch.nn.Module):
    def forward(self, hidden_states, timestep=None, *extra, scale=1.0, **kwargs):
        return hidden_states


def test_arguments_bind_by_name_without_self_and_spread_kwargs():
    signature = forward_signature(_Model())
    assert list(signature.parameters)[0] == "hidden_states"
    x = torch.zeros(1)
    assert bind_arguments(signature, (x,), {"timestep": 3, "guidance": 2}) == {
        "hidden_states": x, "timestep": 3, "guidance": 2}
    assert bind_arguments(signature, (x, 1, 2), {}) == {"hidden_states": x, "timestep": 1, "extra": (2,)}
    assert "scale" not in bind_arguments(signature, (x,), {})  # defaults are not filled in
