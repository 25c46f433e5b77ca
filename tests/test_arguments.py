"""integrations.arguments: a module call's arguments by name, as the denoiser's and the ControlNet's hooks bind them."""

from __future__ import annotations

import inspect

import pytest
import torch

from spectrum_cache.integrations.arguments import Binder


class _Model(torch.nn.Module):
    def forward(self, hidden_states, timestep=None, *extra, scale=1.0, **kwargs):
        return hidden_states


def _reference(args, kwargs):
    signature = inspect.signature(_Model.forward)
    signature = signature.replace(parameters=list(signature.parameters.values())[1:])
    bound = dict(signature.bind_partial(*args, **kwargs).arguments)
    bound.update(bound.pop("kwargs", {}))
    return bound


@pytest.mark.parametrize("args, kwargs", [
    ((), {"hidden_states": 1, "timestep": 2}),
    ((1,), {"timestep": 2, "guidance": 3}),
    ((1, 2), {"scale": 0.5, "guidance": 3}),
    ((1, 2, 3, 4), {}),  # *extra
    ((1,), {"guidance": 3, "timestep": 2}),  # keyword order differs from the signature's
])
def test_binding_matches_inspect_with_kwargs_spread(args, kwargs):
    bound = Binder(_Model())(args, kwargs)
    assert bound == _reference(args, kwargs)
    assert list(bound) == list(_reference(args, kwargs))  # the signature's order: input keys do not depend on call order


def test_defaults_are_not_filled_in_and_a_clash_is_left_to_the_forward():
    binder = Binder(_Model())
    assert "scale" not in binder((1,), {})
    with pytest.raises(TypeError):
        binder((1,), {"hidden_states": 2})
