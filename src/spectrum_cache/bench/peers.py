"""cache-dit as a benchmark peer: its DBCache alone and with its TaylorSeer, FoCa and DMD calibrators.

cache-dit (``pip install -e ".[peers]"``, written against cache-dit 1.5.3) caches a DiT's middle blocks:
on every step the first ``Fn`` blocks run, and on a cached step the rest is replaced by the residual
the middle blocks added on the last computed step (a calibrator forecasts that residual instead of
holding it), then the last ``Bn`` blocks run. Which steps compute is decided by a residual-difference
threshold or, as here by default, by a fixed step mask (``steps_computation_mask`` with the "static"
policy: a 0 in the mask always caches), so the pass count is known in advance.

How it is attached to a pipeline cache-dit does not know (the embedded EmbeddedPipeline): cache-dit
registers block adapters by class-name prefix. If the pipeline's class is registered, its adapter is
used as ``cache_dit.enable_cache(pipe)`` would; otherwise the adapter registered for the transformer's
class (``FluxTransformer2DModel`` -> cache-dit's "Flux" adapter) is built around this pipeline and
passed to ``cache_dit.enable_cache`` as a BlockAdapter, so the cache context is reset on every
pipeline call as for FluxPipeline. For FLUX that adapter joins the 2 dual- and 4 single-stream blocks
into one list of 6 and patches the transformer's forward (FluxPatchFunctor); ``cache_dit.disable_cache``
leaves that patched forward behind, so it is removed here too. So is a subtler leftover: cache-dit's
forward swaps the block lists in with ``unittest.mock.patch.object``, which re-adds them at the end of
the transformer's children on exit, so ``single_transformer_blocks`` came to precede
``transformer_blocks``: diffusers' First Block Cache, which takes the first and last block in that
order, then hooked the wrong blocks and crashed. The children's order is put back after every run.

Choices and cache-dit quirks worth knowing:

- cache-dit's default ``Fn_compute_blocks=8`` fails on a model with fewer blocks (an assertion inside
  the first forward). The bench uses Fn=1, Bn=0 (cache-dit's own fastest recommended setting) and
  refuses, with a one-line reason, any Fn + Bn that leaves no block to cache.
- The Fn blocks run on cached steps too. The bench counts passes through the last block (which does
  not run on a cached step when Bn=0), so the pass count and ideal speedup leave out 1 of 6 blocks per
  cached step on the embedded model (1 of 57 on FLUX.1-dev); the measured speedup includes it.
- cache-dit tells a pipeline's cond and uncond calls apart only by their parity
  (``enable_separate_cfg``): it must be told whether the pipeline makes two transformer calls per step.
  That is decided from the guidance scale and the pipeline (cache-dit's registry where it knows the
  pipeline, else whether its ``__call__`` runs the transformer in ``cache_context("uncond", ...)``), and
  checked after every generation: if cache-dit counted another number of steps than the sampler ran,
  the method is refused rather than measured with scrambled branches.
- ``enable_cache`` on a pipeline patches its class's ``__call__`` (every instance of the class) until
  ``disable_cache``.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ..config import SpectrumConfig
from ..errors import first_line
from ..schedule import compute_steps

CACHE_DIT_TESTED = "1.5.3"
INSTALL_HINT = 'pip install -e ".[peers]"'
# "dbcache" is DBCache alone; the others are DBCache with that calibrator forecasting the cached residual.
CALIBRATORS = ("dbcache", "taylorseer", "foca", "dmd")
# cache-dit's own predefined step masks (cache_dit.steps_mask(mask_policy=...)), slowest to fastest.
MASK_POLICIES = ("slow", "medium", "fast", "ultra")
DEFAULT_FN, DEFAULT_BN = 1, 0
_MISSING = object()


class UnsupportedMethod(Exception):
    """The model cannot run this method (the benchmark skips it with a note)."""


def _unsupported(message: str) -> Exception:
    return UnsupportedMethod(message)


@dataclass(frozen=True)
class CacheDitSettings:
    """One cache-dit setting: a calibrator and exactly one of a Spectrum schedule (``alpha``), one of
    cache-dit's step-mask policies, or a residual-difference threshold."""

    calibrator: str
    alpha: float | None = None
    policy: str | None = None
    threshold: float | None = None
    fn: int = DEFAULT_FN
    bn: int = DEFAULT_BN

    def __post_init__(self) -> None:
        if self.calibrator not in CALIBRATORS:
            raise ValueError(f"cache-dit calibrator must be one of {', '.join(CALIBRATORS)}, got {self.calibrator!r}")
        if sum(x is not None for x in (self.alpha, self.policy, self.threshold)) != 1:
            raise ValueError("a cache-dit setting needs exactly one of alpha, policy or threshold")
        if self.alpha is not None:
            SpectrumConfig(flex_window=self.alpha)  # the same range check as Spectrum's
        if self.policy is not None and self.policy not in MASK_POLICIES:
            raise ValueError(f"cache-dit mask policy must be one of {', '.join(MASK_POLICIES)}, got {self.policy!r}")
        if self.threshold is not None and not (math.isfinite(self.threshold) and self.threshold > 0):
            raise ValueError(f"the residual-difference threshold must be > 0, got {self.threshold}")
        if self.fn < 1 or self.bn < 0:
            raise ValueError(f"cache-dit needs Fn >= 1 and Bn >= 0, got Fn={self.fn}, Bn={self.bn}")

    @property
    def name(self) -> str:
        """The canonical method name (see bench.methods)."""
        if self.alpha is not None:
            schedule = f"a{self.alpha}"
        elif self.policy is not None:
            schedule = self.policy
        else:
            schedule = f"t{self.threshold}"
        blocks = "" if (self.fn, self.bn) == (DEFAULT_FN, DEFAULT_BN) else f"-f{self.fn}b{self.bn}"
        return f"cachedit-{self.calibrator}-{schedule}{blocks}"

    def steps_mask(self, num_inference_steps: int) -> list[int] | None:
        """1 = the step runs the network, 0 = cached; None for the threshold-driven setting."""
        if self.alpha is not None:
            steps = set(compute_steps(SpectrumConfig(flex_window=self.alpha), num_inference_steps))
            return [int(s in steps) for s in range(num_inference_steps)]
        if self.policy is not None:
            cache_dit = import_cache_dit()
            try:
                return list(cache_dit.steps_mask(total_steps=num_inference_steps, mask_policy=self.policy))
            except (AssertionError, ValueError) as error:  # e.g. fewer than 8 steps other than 4 or 6
                raise _unsupported(f"cache-dit has no {self.policy!r} mask for {num_inference_steps} steps: {error}") from None
        return None

    def expected_passes(self, num_inference_steps: int) -> int | None:
        """Network passes per trajectory for a step mask; None for a threshold (or without cache-dit)."""
        try:
            mask = self.steps_mask(num_inference_steps)
        except Exception:  # cache-dit missing, or no such mask: the run will say why
            return None
        return None if mask is None else sum(mask)

    def cache_config(self, num_inference_steps: int, separate_cfg: bool) -> Any:
        """The cache_dit.DBCacheConfig for a generation of ``num_inference_steps`` steps."""
        cache_dit = import_cache_dit()
        common = {"Fn_compute_blocks": self.fn, "Bn_compute_blocks": self.bn, "enable_separate_cfg": separate_cfg,
                  "num_inference_steps": num_inference_steps}
        mask = self.steps_mask(num_inference_steps)
        if mask is None:  # cache-dit's defaults otherwise: 8 warm-up steps, no cap on cached steps
            return cache_dit.DBCacheConfig(residual_diff_threshold=self.threshold, **common)
        return cache_dit.DBCacheConfig(steps_computation_mask=mask, steps_computation_policy="static", **common)

    def calibrator_config(self) -> Any:
        """The calibrator config (cache-dit's defaults: TaylorSeer order 1, DMD history 6), None for DBCache alone."""
        cache_dit = import_cache_dit()
        return {
            "dbcache": lambda: None,
            "taylorseer": lambda: cache_dit.TaylorSeerCalibratorConfig(taylorseer_order=1),
            "foca": cache_dit.FoCaCalibratorConfig,
            "dmd": cache_dit.DMDCalibratorConfig,
        }[self.calibrator]()


def import_cache_dit() -> Any:
    """The cache_dit module, or UnsupportedMethod with the install command."""
    try:
        import cache_dit
    except ImportError:
        raise _unsupported(f"cache-dit is not installed ({INSTALL_HINT})") from None
    return cache_dit


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """cache-dit logs at INFO to stdout on every enable and a warning on every disable: errors only, while
    the bench drives it (all its loggers share one console handler)."""
    from cache_dit import logger as cache_dit_logger

    handlers = [h for h in (getattr(cache_dit_logger, "_default_handler", None),
                            getattr(cache_dit_logger, "_default_file_handler", None)) if h is not None]
    levels = [h.level for h in handlers]
    for handler in handlers:
        handler.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for handler, level in zip(handlers, levels, strict=True):
            handler.setLevel(level)


def block_adapter(pipe: Any) -> Any:
    """cache-dit's BlockAdapter for ``pipe``: the pipeline's registered one, else the one registered for
    its transformer's class built around this pipeline; UnsupportedMethod where there is none."""
    import_cache_dit()
    from cache_dit.caching.block_adapters import BlockAdapterRegister

    if BlockAdapterRegister.is_supported(pipe):
        return BlockAdapterRegister.get_adapter(pipe)
    transformer = getattr(pipe, "transformer", None)
    if transformer is None:
        raise _unsupported(f"cache-dit caches DiT transformers; {type(pipe).__name__} has none")
    name = type(transformer).__name__
    for prefix, factory in BlockAdapterRegister._adapters.items():  # no public lookup by transformer class
        if name.startswith(prefix):
            return factory(pipe)
    raise _unsupported(f"cache-dit has no block adapter for {type(pipe).__name__} or {name}")


def _block_lists(adapter: Any) -> list[Any]:
    import torch

    lists: list[Any] = []
    pending = [adapter.blocks]
    while pending:
        item = pending.pop()
        if isinstance(item, torch.nn.ModuleList):
            lists.append(item)
        elif isinstance(item, (list, tuple)):
            pending.extend(item)
    return lists


def guidance_default(pipe: Any) -> float | None:
    """The pipeline's default ``guidance_scale``, None if its call has no such parameter."""
    try:
        parameter = inspect.signature(type(pipe).__call__).parameters.get("guidance_scale")
    except (AttributeError, TypeError, ValueError):
        return None
    if parameter is None or parameter.default is inspect.Parameter.empty:
        return None
    return parameter.default


def separate_cfg(pipe: Any, guidance_scale: float | None) -> bool:
    """Whether the pipeline calls the transformer twice a step (cond, then uncond) at this guidance scale.
    Checked after every generation (see ``cache_dit_applied``), so a wrong answer is refused, never used."""
    from cache_dit.caching.block_adapters import BlockAdapterRegister

    if guidance_scale is None:
        guidance_scale = guidance_default(pipe)
    if guidance_scale is not None and guidance_scale <= 1:
        return False
    if BlockAdapterRegister.is_supported(pipe):
        return BlockAdapterRegister.has_separate_cfg(pipe)
    try:
        source = inspect.getsource(type(pipe).__call__)
    except (OSError, TypeError):
        return False
    return re.search(r"""cache_context\(\s*["']uncond["']""", source) is not None


def _module_state(module: Any) -> list[tuple[Any, Any, Any, list[str]]]:
    """What cache-dit changes and does not put back, for each submodule: its own ``forward`` and
    ``_is_patched`` attributes (set by its patch functors) and the order of its children (its forward
    swaps the block lists in with unittest.mock.patch.object, which re-adds them at the end on exit)."""
    return [(m, m.__dict__.get("forward", _MISSING), m.__dict__.get("_is_patched", _MISSING), list(m._modules))
            for m in module.modules()]


def _restore_module_state(saved: list[tuple[Any, Any, Any, list[str]]]) -> None:
    for module, forward, patched, order in saved:
        for name, value in (("forward", forward), ("_is_patched", patched)):
            if value is _MISSING:
                module.__dict__.pop(name, None)
            else:
                module.__dict__[name] = value
        children = module._modules
        if list(children) != order and set(children) == set(order):
            for name in order:  # re-insert in the saved order
                children[name] = children.pop(name)


@contextlib.contextmanager
def cache_dit_applied(pipe: Any, settings: CacheDitSettings, num_inference_steps: int,
                      guidance_scale: float | None = None) -> Iterator[None]:
    """cache-dit switched on for one generation of ``num_inference_steps`` steps, and off again (the
    pipeline and its transformer are left as they were). UnsupportedMethod where it cannot run, also
    after the generation if cache-dit's step count shows the CFG calls were not paired as configured."""
    cache_dit = import_cache_dit()
    if cache_dit.__version__ != CACHE_DIT_TESTED:
        logging.getLogger(__name__).warning("cache-dit %s installed; the bench's settings were tested with %s",
                                            cache_dit.__version__, CACHE_DIT_TESTED)
    transformer = getattr(pipe, "transformer", None)
    saved = _module_state(transformer) if transformer is not None else []
    with _quiet():
        try:
            separate = separate_cfg(pipe, guidance_scale)
            cache_config = settings.cache_config(num_inference_steps, separate)
            calibrator = settings.calibrator_config()
            adapter = block_adapter(pipe)
            sizes = [len(blocks) for blocks in _block_lists(adapter)]
            if not sizes or settings.fn + settings.bn >= min(sizes):
                raise UnsupportedMethod(f"cache-dit Fn={settings.fn} + Bn={settings.bn} compute blocks leave nothing to "
                                        f"cache in block lists of {sizes} (its default Fn=8 needs more than 8 blocks)")
            cache_dit.enable_cache(adapter, cache_config=cache_config, calibrator_config=calibrator)
        except Exception as error:
            with contextlib.suppress(Exception):
                cache_dit.disable_cache(pipe)
            _restore_module_state(saved)
            if isinstance(error, UnsupportedMethod):
                raise
            raise UnsupportedMethod(f"cache-dit: {type(error).__name__}: {first_line(error)}") from None
        try:
            yield
            stats = cache_dit.summary(pipe, logging=False)
            executed = stats[0].accumulated_executed_steps if stats else None
            if executed != num_inference_steps:
                raise UnsupportedMethod(
                    f"cache-dit counted {executed} steps of {num_inference_steps} with enable_separate_cfg={separate}: "
                    "the pipeline's cond/uncond calls do not pair as configured")
        finally:
            cache_dit.disable_cache(pipe)
            _restore_module_state(saved)
