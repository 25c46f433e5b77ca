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


def test_fields_are_keyword_only_and_a_positional_call_says_so():
    # The first field is N: SpectrumConfig(0.75) used to fail as a bad num_inference_steps.
    with pytest.raises(TypeError, match=r"keyword arguments only, e\.g\. SpectrumConfig\(flex_window=0\.75\).*got positional 0\.75"):
        SpectrumConfig(0.75)
    with pytest.raises(TypeError, match="keyword arguments only"):
        SpectrumConfig(50, 5)
    assert SpectrumConfig(flex_window=0.5).flex_window == 0.5


def test_the_papers_alpha_is_named_flex_window():
    # The README and the paper call the window's growth alpha; the field is flex_window.
    with pytest.raises(TypeError, match=r"no field alpha: the paper's alpha is flex_window, e\.g\. "
                       r"SpectrumConfig\(flex_window=3\.0\)"):
        SpectrumConfig(alpha=3.0)
    with pytest.raises(TypeError, match="flex_window"):
        SpectrumConfig().replace(alpha=3.0)


def test_copies_and_pickles_survive_the_keyword_only_constructor():
    import copy
    import pickle

    c = SpectrumConfig(flex_window=3.0, history=5)
    assert copy.deepcopy(c) == c and pickle.loads(pickle.dumps(c)) == c and c.replace(degree=3).flex_window == 3.0


@pytest.mark.parametrize(
    "speedup, steps, reason",
    [
        (2, 4, r"in \[1, 1\], got 2\. At 4 steps every one of the 4 steps is a warm-up step \(warmup_steps=5\).*"
               r"highest speedup is 4 / 4 = 1; use more than 5 steps"),
        (99, 50, r"in \[1, 8\.333\], got 99\. At 50 steps the first 5 steps \(warmup_steps\) always run the network "
                 r"and the sparsest schedule runs 1 more after them, so at least 6 of 50 run"),
    ],
)
def test_for_speedup_out_of_reach_says_why(speedup, steps, reason):
    with pytest.raises(ValueError, match=reason):
        SpectrumConfig.for_speedup(speedup, steps)


def test_for_speedup_below_one_has_no_ceiling_explanation():
    with pytest.raises(ValueError, match=r"got 0\.5\.$"):
        SpectrumConfig.for_speedup(0.5, 50)


def test_for_speedup_needs_a_step_count():
    # The config's None (the pipeline's count) cannot give a speedup: a ValueError naming it, not a TypeError.
    with pytest.raises(ValueError, match=r"num_inference_steps must be an integer >= 1, got None\."):
        SpectrumConfig.for_speedup(4, None)
