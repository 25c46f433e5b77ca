import pytest

from spectrum_cache import SpectrumConfig


def test_defaults_are_the_papers():
    c = SpectrumConfig()
    assert (c.degree, c.ridge_lambda, c.blend_weight) == (4, 0.1, 0.5)
    assert (c.warmup_steps, c.window_size, c.flex_window) == (5, 2, 0.75)
    assert c.num_inference_steps is None


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("degree", -1, r"degree must be an integer in \[0, 32\]"),
        ("degree", 2.5, r"degree must be an integer in \[0, 32\]"),
        ("ridge_lambda", -0.1, "ridge_lambda must be a finite number >= 0"),
        ("blend_weight", 1.5, r"blend_weight must be a number in \[0, 1\]"),
        ("blend_weight", -0.1, r"blend_weight must be a number in \[0, 1\]"),
        ("warmup_steps", 0, "warmup_steps must be an integer >= 1"),
        ("window_size", 0.5, "window_size must be a finite number >= 1"),
        ("flex_window", -1, "flex_window must be a finite number >= 0"),
        ("num_inference_steps", 0, "num_inference_steps must be an integer >= 1"),
        ("forecaster", "magic", "forecaster must be one of"),
        ("forecast_output", "yes", "forecast_output must be True or False"),
    ],
)
def test_bad_values_raise_naming_the_field(field, value, message):
    with pytest.raises(ValueError, match=message):
        SpectrumConfig(**{field: value})


def test_config_is_immutable_and_replace_validates():
    c = SpectrumConfig()
    with pytest.raises(Exception):
        c.degree = 3
    assert c.replace(degree=3).degree == 3
    with pytest.raises(ValueError, match="degree"):
        c.replace(degree=-2)
