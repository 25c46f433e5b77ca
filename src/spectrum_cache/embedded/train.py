"""Train the embedded model: rectified flow on synthetic captioned scenes, on CPU.

    python -m spectrum_cache.embedded.train --out src/spectrum_cache/embedded/weights

Seeded and resumable: batch, caption dropout, noise and timesteps of step k are a pure function of
(--seed, k), and a checkpoint (models, EMA, optimizer, step) is written every --checkpoint-minutes,
so `--resume` continues exactly where the run stopped. Training stops at --steps or after
--max-minutes of training time, whichever comes first; then the EMA weights are exported as a
diffusers pipeline folder (fp16 safetensors) into --out. See TRAINING.md for the shipped run.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import pickle
import re
import time
from typing import TYPE_CHECKING, Any, cast

import torch
import torch.nn.functional as F
from tqdm import tqdm

from .data import IMAGE_SIZE, make_batch
from .model import PATCH, POSITION_UNITS, build_models, denoiser_input, model_position_features, image_ids, pack, patch_size_of, text_encoder_config, text_ids, transformer_config
from .tokenizer import WordTokenizer

if TYPE_CHECKING:
    from diffusers import FluxTransformer2DModel

    from .text_encoder import TinyTextEncoder

STATE_FILE = "state.pt"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="pipeline folder to export the final weights into")
    p.add_argument("--ckpt-dir", default="runs/embedded_ckpt", help="checkpoint folder (git-ignored /runs/)")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint in --ckpt-dir")
    p.add_argument("--steps", type=int, default=10000, help="stop after this many optimizer steps ...")
    p.add_argument("--max-minutes", type=float, default=97.0, help="... or this much training time, if sooner")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=int, default=100)
    # Defaults of --cooldown and --compile: as the shipped weights were trained (TRAINING.md).
    p.add_argument("--cooldown", type=float, default=0.0,
                   help="fraction of the budget (--steps or --max-minutes, whichever runs out first) over which the "
                        "learning rate falls linearly to 0 at the end; 0 (the default) keeps it constant")
    p.add_argument("--ema", type=float, default=0.998, help="EMA decay of the exported weights")
    p.add_argument("--prediction", choices=("velocity", "sample"), default="velocity",
                   help="what the transformer predicts: the velocity noise - x0 (the shipped weights), or the clean "
                        "image x0, trained through the velocity it implies (x_t - x0) / t, with t at least 0.05 there")
    p.add_argument("--position-unit", choices=POSITION_UNITS, default="token",
                   help="unit of the image tokens' RoPE positions: patches as in FLUX (the shipped weights), or pixels "
                        "(model.image_ids says why)")
    p.add_argument("--timestep-shift", type=float, default=1.0,
                   help="SD3's shift of the logit-normal timesteps, t -> s t / (1 + (s - 1) t): above 1 trains more at "
                        "high noise, where the layout is decided; 1 (the shipped weights) leaves them as drawn")
    p.add_argument("--freeze-text-encoder", action="store_true",
                   help="keep the text encoder at its seeded random initialisation and train the transformer alone "
                        "(off for the shipped weights, whose text encoder was trained jointly)")
    p.add_argument("--caption-dropout", type=float, default=0.1, help="fraction of empty captions (for CFG)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--width", type=int, default=192, help="transformer width (heads * head_dim)")
    p.add_argument("--heads", type=int, default=6)
    p.add_argument("--dual", type=int, default=2, help="dual-stream (MM-DiT) blocks")
    p.add_argument("--single", type=int, default=4, help="single-stream blocks")
    p.add_argument("--patch", type=int, default=PATCH,
                   help=f"side of the RGB pixel patch one token carries (default {PATCH}: 64 tokens of 48x48 pixels)")
    p.add_argument("--position-channels", type=int, default=0,
                   help="coordinate channels (sin/cos of x and y, a multiple of 4) appended to every input token; 0 (the "
                        "shipped weights) leaves absolute position to RoPE alone (model.position_features says why)")
    p.add_argument("--text-width", type=int, default=128)
    p.add_argument("--text-layers", type=int, default=2)
    p.add_argument("--text-heads", type=int, default=4)
    p.add_argument("--checkpoint-minutes", type=float, default=3.0)
    # Both cores: 0.55 s a step against 0.90 with one, on an idle machine. Leave the machine idle while
    # it trains; with other work on the cores, --threads 1 stalls less at OpenMP barriers.
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=False,
                   help="torch.compile the transformer for training (about 1.3x faster a step here, after about "
                        "100 s of compiling, which counts as training time; off by default)")
    args = p.parse_args(argv)
    if not 0.0 <= args.cooldown < 1.0:
        p.error(f"--cooldown must be in [0, 1), got {args.cooldown}")
    if args.timestep_shift <= 0:
        p.error(f"--timestep-shift must be positive, got {args.timestep_shift}")
    if args.position_channels < 0 or args.position_channels % 4:
        p.error(f"--position-channels must be a non-negative multiple of 4, got {args.position_channels}")
    if args.patch < 1 or IMAGE_SIZE % args.patch:
        p.error(f"--patch must divide the image side {IMAGE_SIZE}, got {args.patch}")
    return args


def lr_at(step: int, elapsed: float, args: argparse.Namespace) -> float:
    """Linear warmup, constant, then a linear cooldown to 0 over the last --cooldown of the budget.

    The run stops on --steps or on --max-minutes, whichever comes first, so progress is the larger of
    the two fractions used; the cooldown then ends exactly where the run does. A time-limited run's
    length already depends on the machine's speed; the cooldown adds no other dependence.
    """
    warm = min(1.0, (step + 1) / args.warmup)
    if args.cooldown <= 0:
        return args.lr * warm
    progress = max(step / args.steps, elapsed / (60 * args.max_minutes))
    return args.lr * min(warm, max(0.0, (1.0 - progress) / args.cooldown))


def training_batch(step: int, args: argparse.Namespace, tokenizer: WordTokenizer) -> dict[str, torch.Tensor]:
    """Everything random about step `step`, derived from (seed, step) only (hence exact resume)."""
    seeds = [(args.seed * 1_000_003 + step) * args.batch_size + i for i in range(args.batch_size)]
    images, captions = make_batch(seeds, held_out=False)
    gen = torch.Generator().manual_seed(args.seed * 1_000_003 + step)
    drop = torch.rand(len(captions), generator=gen) < args.caption_dropout
    captions = ["" if d else c for c, d in zip(captions, drop.tolist())]
    x0 = torch.from_numpy(images)
    noise = torch.randn(x0.shape, generator=gen)
    # Logit-normal timesteps (SD3): most weight on mid noise levels, where composition is decided.
    t = torch.sigmoid(torch.randn(x0.shape[0], generator=gen))
    t = args.timestep_shift * t / (1 + (args.timestep_shift - 1) * t)
    return {"x0": x0, "noise": noise, "t": t, "input_ids": tokenizer.ids(captions)}


def flow_loss(transformer: torch.nn.Module, text_encoder: torch.nn.Module, batch: dict[str, torch.Tensor],
              prediction: str = "velocity", position_unit: str = "token") -> torch.Tensor:
    """Rectified flow: x_t = (1-t) x0 + t noise; the loss is on the velocity noise - x0 (FLUX's
    convention), predicted directly or, for ``prediction="sample"``, through the predicted x0."""
    x0, noise, t = batch["x0"], batch["noise"], batch["t"]
    tt = t.view(-1, 1, 1, 1)
    xt = (1 - tt) * x0 + tt * noise
    seq, pooled = text_encoder(batch["input_ids"])
    h, w = x0.shape[-2:]
    patch = patch_size_of(transformer)
    features = model_position_features(transformer, h, w)
    pred = transformer(
        hidden_states=denoiser_input(pack(xt, patch), features),
        encoder_hidden_states=seq,
        pooled_projections=pooled,
        timestep=t,  # FluxTransformer2DModel multiplies by 1000 inside, as the FLUX pipeline expects
        img_ids=image_ids(h, w, patch=patch, position_unit=position_unit),
        txt_ids=text_ids(seq.shape[1]),
    ).sample
    if prediction == "sample":
        # Li and He 2025 ("Back to Basics"): high-dimensional pixel patches are learnt far better as x0.
        pred = (pack(xt, patch) - pred) / t.clamp(min=0.05).view(-1, 1, 1)
    return F.mse_loss(pred, pack(noise - x0, patch))


def load_state(path: str) -> dict[str, Any]:
    """A checkpoint written by ``save_state``, read without running any code it holds.

    ``weights_only=True`` unpickles tensors and plain values only (the state dicts, the optimizer's state,
    ints, floats, lists and the argument dict are all a checkpoint has), so a crafted file in --ckpt-dir
    cannot run code on --resume. Failures are one-line SystemExit messages, as the other resume refusals."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise SystemExit(f"--resume: there is no checkpoint at {path}") from None
    except (pickle.UnpicklingError, RuntimeError) as error:
        # torch's message spans many lines; the one line here says what happened and that nothing ran.
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(error))
        if found:
            raise SystemExit(f"--resume: {path} holds an object other than tensors and plain values ({found.group(1)}), "
                             "so it is not a checkpoint this trainer wrote; it was not loaded (nothing in it ran)") from None
        raise SystemExit(f"--resume: {path} is not a readable checkpoint (damaged, or not written by this "
                         "trainer); it was not loaded") from None
    if not isinstance(state, dict):
        raise SystemExit(f"--resume: {path} is not a checkpoint this trainer wrote (it holds a "
                         f"{type(state).__name__}, not a dict)")
    return state


def save_state(path: str, state: dict[str, Any]) -> None:
    """Write atomically, so a run killed mid-save never leaves a broken checkpoint."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    torch.save(state, path + ".tmp")
    os.replace(path + ".tmp", path)


def export_pipeline(out: str, transformer: FluxTransformer2DModel, text_encoder: TinyTextEncoder, tokenizer: WordTokenizer,
                    prediction: str = "velocity", position_unit: str = "token") -> None:
    """Save a diffusers pipeline folder with fp16 weights (halves the shipped size)."""
    from .pipeline import EmbeddedPipeline, make_scheduler

    pipe = EmbeddedPipeline(
        transformer=copy.deepcopy(transformer).half(),
        text_encoder=copy.deepcopy(text_encoder).half(),
        tokenizer=tokenizer,
        scheduler=make_scheduler(),
        prediction_type=prediction,
        position_unit=position_unit,
    )
    pipe.save_pretrained(out, safe_serialization=True)


def models_for(args: argparse.Namespace) -> tuple[WordTokenizer, FluxTransformer2DModel, TinyTextEncoder]:
    """The tokenizer and the freshly initialised (seeded) transformer and text encoder that ``args`` train,
    the text encoder frozen if ``args.freeze_text_encoder``."""
    tokenizer = WordTokenizer()
    tcfg = transformer_config(args.width, args.heads, args.dual, args.single, args.text_width, args.patch,
                              args.position_channels)
    ecfg = text_encoder_config(len(tokenizer), args.text_width, args.text_layers, args.text_heads, tokenizer.model_max_length)
    torch.manual_seed(args.seed)  # parameter initialisation
    transformer, text_encoder = build_models(tcfg, ecfg)
    # A frozen text encoder keeps its seeded random weights: trained jointly, ours learnt colour words
    # and lost position words (TRAINING.md, "What stops the model following position words").
    text_encoder.requires_grad_(not args.freeze_text_encoder)
    return tokenizer, transformer, text_encoder


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run (or resume) training, export the pipeline, and return a summary."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    ckpt_dir = args.ckpt_dir
    state_path = os.path.join(ckpt_dir, STATE_FILE)
    tokenizer, transformer, text_encoder = models_for(args)
    params = list(transformer.parameters()) + [p for p in text_encoder.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0)
    ema_t, ema_e = copy.deepcopy(transformer).requires_grad_(False), copy.deepcopy(text_encoder).requires_grad_(False)
    step, elapsed, losses = 0, 0.0, []
    if args.resume:
        state = load_state(state_path)
        for flag, default in (("prediction", "velocity"), ("position_unit", "token"), ("patch", PATCH),
                              ("position_channels", 0), ("timestep_shift", 1.0),
                              ("freeze_text_encoder", False)):
            trained_for, asked = state.get("args", {}).get(flag, default), getattr(args, flag)
            if trained_for != asked:
                option = "--" + flag.replace("_", "-")
                raise SystemExit(f"{option} {asked}: the checkpoint in {ckpt_dir} was trained with {option} {trained_for}")
        transformer.load_state_dict(state["transformer"])
        text_encoder.load_state_dict(state["text_encoder"])
        ema_t.load_state_dict(state["ema_transformer"])
        ema_e.load_state_dict(state["ema_text_encoder"])
        optimizer.load_state_dict(state["optimizer"])
        step, elapsed, losses = state["step"], state["elapsed"], state["losses"]
    ema_params: list[torch.Tensor] = list(ema_t.parameters()) + ([] if args.freeze_text_encoder else list(ema_e.parameters()))
    # The compiled wrapper shares the transformer's parameters; checkpoints and the EMA use the module itself.
    # (torch.compile of a module is a module, its OptimizedModule, which reads attributes through to the transformer.)
    forward_model = cast(torch.nn.Module, torch.compile(transformer)) if args.compile else transformer

    def checkpoint() -> None:
        save_state(state_path, {
            "transformer": transformer.state_dict(), "text_encoder": text_encoder.state_dict(),
            "ema_transformer": ema_t.state_dict(), "ema_text_encoder": ema_e.state_dict(),
            "optimizer": optimizer.state_dict(), "step": step, "elapsed": elapsed, "losses": losses,
            "args": vars(args),
        })

    last_ckpt = start = time.time()
    elapsed0 = elapsed
    bar = tqdm(total=args.steps, initial=step, desc="train", dynamic_ncols=True, mininterval=5.0)
    while step < args.steps and elapsed < 60 * args.max_minutes:
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, elapsed, args)
        loss = flow_loss(forward_model, text_encoder, training_batch(step, args, tokenizer), args.prediction,
                         args.position_unit)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        # EMA with a short ramp so early checkpoints are not dominated by the random init.
        decay = min(args.ema, (1 + step) / (10 + step))
        with torch.no_grad():
            torch._foreach_lerp_(ema_params, [p.detach() for p in params], 1 - decay)
        losses.append(loss.item())
        step += 1
        elapsed = elapsed0 + time.time() - start
        bar.update(1)
        if step % 50 == 0:
            bar.set_postfix(loss=f"{sum(losses[-50:]) / len(losses[-50:]):.4f}")
        if time.time() - last_ckpt > 60 * args.checkpoint_minutes:
            checkpoint()
            last_ckpt = time.time()
    bar.close()
    checkpoint()
    export_pipeline(args.out, ema_t, ema_e, tokenizer, args.prediction, args.position_unit)
    tail = losses[-100:]
    summary = {"steps": step, "wall_time_s": round(elapsed, 1), "final_loss_last100": sum(tail) / max(1, len(tail))}
    with open(os.path.join(ckpt_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
