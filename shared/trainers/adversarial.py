"""The two-player trainer: generators that transform real images, trained against one or more critics.

The shape of Hayase et al.'s augmentation generator (wave2 spec, section 2): a
generator side (an augmenter G_A(x, z) and any auxiliary modules, e.g. an eliminator
G_E and a latent predictor G_L sharing a trunk) plays against critics (D_f, D_p) that
judge images through a frozen feature network F. The paper supplies the losses as
functions in an `AdversarialMethod`; this trainer owns the update order.

Read top to bottom: freeze F (eval mode, no parameter gradients; gradients still flow
through it to the generators), build one optimiser per module, resume from the
checkpoint if there is one, then per step:
1. a batch from every loader ({name: (x, y, index)}),
2. the generator side's forward once, `out = method.forward(generators, batch)`,
3. each critic's loss on the detached `out`, backward into that critic only,
4. the generator loss through the critics, which are frozen for it (their parameters
   take no gradient from it), backward into the generators,
5. the optimiser steps: alternating (default) steps each critic right after its
   backward, so the generator loss of step 4 sees the updated critics; simultaneous
   (Algorithm 1 of Hayase et al.) steps nothing until both gradients exist, so the
   critics' and the generators' gradients are taken at the same parameter values,
   and the gradient the generator loss would send to the critics is never applied;
then log, evaluate, checkpoint. A resumed run repeats exactly what the uninterrupted
run would have done: the checkpoint holds every module, every optimiser, the step,
each loader's position and every RNG, and evaluation leaves the RNGs as it found them.

F is not checkpointed: it is an input of the stage (a pre-trained network) and must be
the same on resume. Nothing here assumes images: `method.forward` prepares its inputs.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable, Literal, Mapping, Sequence

import torch
from torch import Tensor, nn
from tqdm import tqdm

from shared import checkpoint
from shared.device import autocast
from shared.gan_losses import Logs
from shared.tracking import Logger
from shared.trainers.gan import RNGPreserved, check_finite, endless_batches
from shared.trainers.ssl import EpochLoader

Modules = Mapping[str, nn.Module]
Batch = Mapping[str, Sequence[Tensor]]  # loader name -> that loader's (x, y, index)
Outputs = Mapping[str, Tensor]
Forward = Callable[[Modules, Batch], dict[str, Tensor]]
CriticLoss = Callable[[nn.Module, nn.Module, Outputs], tuple[Tensor, Logs]]
GeneratorLoss = Callable[[Modules, Modules, nn.Module, Outputs], tuple[Tensor, Logs]]
Evaluate = Callable[[Modules, int], dict[str, float]]

__all__ = ["AdversarialConfig", "AdversarialMethod", "AdversarialResult", "adversarial_step", "freeze",
           "make_optimizer", "train_adversarial"]


@dataclasses.dataclass
class AdversarialConfig:
    """Two-player protocol. Defaults: a DCGAN-style Adam setting, alternating updates.

    Hayase et al. (Algorithm 1, Sec. 4) use simultaneous updates and momentum SGD at lr 3e-4,
    batch 256; their package sets `simultaneous=True` and its own optimiser numbers.
    """
    steps: int = 1500
    optimizer: Literal["adam", "sgd"] = "adam"
    lr_g: float = 2e-4  # every generator-side module
    lr_d: float = 2e-4  # every critic
    betas: tuple[float, float] = (0.5, 0.999)  # adam
    momentum: float = 0.9  # sgd
    weight_decay: float = 0.0
    simultaneous: bool = False  # Algorithm 1: both gradients at the same parameters, then all steps
    log_every: int = 100  # steps
    checkpoint_every: int = 500  # steps; the last step always checkpoints
    eval_every: int = 500  # steps; the last step always evaluates

    def __post_init__(self):
        for name in ("steps", "log_every", "checkpoint_every", "eval_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.optimizer not in ("adam", "sgd"):
            raise ValueError(f"optimizer must be 'adam' or 'sgd', got {self.optimizer!r}")
        if not (self.lr_g > 0 and self.lr_d > 0):
            raise ValueError(f"lr_g and lr_d must be > 0, got {self.lr_g}, {self.lr_d}")
        self.betas = tuple(float(b) for b in self.betas)
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"betas must be two numbers in [0, 1), got {self.betas}")
        if not 0 <= self.momentum < 1 or self.weight_decay < 0:
            raise ValueError(f"momentum must be in [0, 1) and weight_decay >= 0, got {self.momentum}, "
                             f"{self.weight_decay}")


@dataclasses.dataclass(frozen=True)
class AdversarialMethod:
    """What the two-player trainer trains with; the paper's functions, the trainer's order.

    forward(generators, batch) -> out: the generator side's forward on one batch (a dict
        of loader name -> (x, y, index)), e.g. {"x_p": ..., "x_f": ..., "z": ...,
        "augmented": G_A(x_p, z), "eliminated": G_E(x_f)}; the outputs carry the
        generators' graph. Random draws (z) use the global RNGs.
    critic_losses[name](critic, F, out) -> (loss, logs): the loss of critic `name`
        (one per critic, same names), on the *detached* outputs.
    generator_loss(generators, critics, F, out) -> (loss, logs): the generator side's
        loss on the outputs with their graph, through the (frozen) critics and F; it
        may run the generators again (cycle terms).
    Log keys are namespaced ("<critic>/...", "g/..."); values are Python floats.
    """
    forward: Forward
    critic_losses: Mapping[str, CriticLoss]
    generator_loss: GeneratorLoss
    name: str


@dataclasses.dataclass
class AdversarialResult:
    history: list[dict[str, float]]  # one entry per evaluation, each with its "step"
    steps: int


def freeze(F: nn.Module) -> nn.Module:
    """F in eval mode (batch-norm statistics fixed) with no parameter gradients; inputs still get gradients."""
    return F.eval().requires_grad_(False)


def make_optimizer(cfg: AdversarialConfig, params, lr: float) -> torch.optim.Optimizer:
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def _check_players(generators: Modules, critics: Modules, F: nn.Module, method: AdversarialMethod) -> None:
    if not generators or not critics:
        raise ValueError(f"need at least one generator and one critic, got {list(generators)} and {list(critics)}")
    if set(method.critic_losses) != set(critics):
        raise ValueError(f"one critic loss per critic: losses for {sorted(method.critic_losses)}, "
                         f"critics {sorted(critics)}")
    owner: dict[int, str] = {id(p): "F" for p in F.parameters()}
    for side, modules in (("generators", generators), ("critics", critics)):
        for name, module in modules.items():
            for p in module.parameters():
                other = owner.setdefault(id(p), f"{side}[{name!r}]")
                if other != f"{side}[{name!r}]":
                    raise ValueError(f"{side}[{name!r}] shares parameters with {other}: every player must "
                                     f"own its parameters (F is frozen and trained by nobody)")


def _check_frozen(F: nn.Module, step: int) -> None:
    if any(m.training for m in F.modules()) or any(p.requires_grad for p in F.parameters()):
        raise RuntimeError(f"F left eval mode or was unfrozen at step {step}: the feature network must stay "
                           f"frozen (shared.trainers.adversarial.freeze)")


# ---------------------------------------------------------------- one step

def adversarial_step(generators: Modules, critics: Modules, F: nn.Module, method: AdversarialMethod, batch: Batch,
                     opt_g: Mapping[str, torch.optim.Optimizer], opt_c: Mapping[str, torch.optim.Optimizer], *,
                     simultaneous: bool, device: torch.device, step: int) -> Logs:
    """One update of every player on `batch` (see the module docstring for the order).

    Afterwards each critic's `.grad` holds the gradient of its own loss alone, and each
    generator's `.grad` the gradient of the generator loss. Raises NonFiniteLossError
    naming the loss and `step` if a loss is NaN or infinite (before any step is taken
    in simultaneous mode; in alternating mode the critics before it may have stepped).
    """
    for critic in critics.values():
        critic.requires_grad_(True)
    with autocast(device):
        out = method.forward(generators, batch)
    detached = {k: v.detach() for k, v in out.items()}
    logs: Logs = {}

    # ---- critics: their own losses on the detached outputs
    for name, critic in critics.items():
        with autocast(device):
            loss, critic_logs = method.critic_losses[name](critic, F, detached)
        logs.update(critic_logs)
        logs[f"{name}/total"] = check_finite(loss, f"critic {name}", step)
        opt_c[name].zero_grad(set_to_none=True)
        loss.backward()
        if not simultaneous:
            opt_c[name].step()

    # ---- generators: through frozen critics (no gradient reaches their parameters) and frozen F
    for critic in critics.values():
        critic.requires_grad_(False)
    with autocast(device):
        loss, g_logs = method.generator_loss(generators, critics, F, out)
    logs.update(g_logs)
    logs["g/total"] = check_finite(loss, "generator", step)
    for opt in opt_g.values():
        opt.zero_grad(set_to_none=True)
    loss.backward()
    for opt in opt_g.values():
        opt.step()
    if simultaneous:  # the critics' gradients were taken at the parameters the generator loss saw
        for opt in opt_c.values():
            opt.step()
    for critic in critics.values():
        critic.requires_grad_(True)
    return logs


# ---------------------------------------------------------------- the loop

def train_adversarial(cfg: AdversarialConfig, generators: Modules, critics: Modules, F: nn.Module,
                      method: AdversarialMethod, loaders: Mapping[str, EpochLoader], *, out_dir: str | Path,
                      logger: Logger, device: torch.device, evaluate: Evaluate | None = None,
                      progress: bool = True) -> AdversarialResult:
    """Train `generators` against `critics` with `method` for `cfg.steps` steps; F stays frozen.

    Every step takes one batch from each loader in `loaders` (each with a deterministic
    order per `set_epoch(e)`, walked independently, epoch after epoch) and hands
    {name: batch} to `method.forward`. `evaluate(generators, step)` runs every
    `eval_every` steps and after the last, with the generators in eval mode, without
    gradients and without moving the training RNGs; its metrics are logged as
    `eval/<name>` and kept in the history. The checkpoint `out_dir/checkpoint.pt` is
    resumed if present. Raises NonFiniteLossError naming the loss, step and value.
    """
    out_dir = Path(out_dir)
    ckpt_path = out_dir / "checkpoint.pt"
    _check_players(generators, critics, F, method)
    if not loaders or any(len(loader) == 0 for loader in loaders.values()):
        raise ValueError(f"every loader must yield batches, got lengths {({k: len(v) for k, v in loaders.items()})}")
    freeze(F)
    opt_g = {name: make_optimizer(cfg, m.parameters(), cfg.lr_g) for name, m in generators.items()}
    opt_c = {name: make_optimizer(cfg, m.parameters(), cfg.lr_d) for name, m in critics.items()}
    step, history = 0, []
    positions = {name: (0, 0) for name in loaders}  # (epoch, batches done in it)

    state = checkpoint.load(ckpt_path, map_location=device)
    if state is not None:
        for modules, key in ((generators, "generators"), (critics, "critics")):
            for name, module in modules.items():
                module.load_state_dict(state[key][name])
        for opts, key in ((opt_g, "opt_g"), (opt_c, "opt_c")):
            for name, opt in opts.items():
                opt.load_state_dict(state[key][name])
        step, history, positions = state["step"], state["history"], state["positions"]
        checkpoint.set_rng_state(state["rng"])
        print(f"resumed from {ckpt_path} at step {step}")

    for module in (*generators.values(), *critics.values()):
        module.train()
    streams = {name: endless_batches(loader, *positions[name]) for name, loader in loaders.items()}
    bar = tqdm(total=cfg.steps, initial=step, desc=f"adversarial {method.name}", unit="step", disable=not progress)
    while step < cfg.steps:
        # ---- data: one batch per loader
        batch = {}
        for name, stream in streams.items():
            epoch, done, batch[name] = next(stream)
            positions[name] = (epoch, done)

        # ---- forward, critics, generators, steps
        logs = adversarial_step(generators, critics, F, method, batch, opt_g, opt_c,
                                simultaneous=cfg.simultaneous, device=device, step=step + 1)
        _check_frozen(F, step + 1)
        step += 1
        bar.update(1)

        # ---- log, evaluate, checkpoint
        last = step == cfg.steps
        if step % cfg.log_every == 0:
            logger.log_metrics({f"train/{k}": v for k, v in logs.items()}, step=step)
            bar.set_postfix({k.split("/")[0]: f"{v:.3f}" for k, v in logs.items() if k.endswith("/total")})
        if evaluate is not None and (step % cfg.eval_every == 0 or last):
            for module in generators.values():
                module.eval()
            with RNGPreserved(), torch.no_grad():
                metrics = evaluate(generators, step)
            for module in generators.values():
                module.train()
            history.append({"step": step, **metrics})
            logger.log_metrics({f"eval/{k}": v for k, v in metrics.items()}, step=step)
        if step % cfg.checkpoint_every == 0 or last:
            checkpoint.save(ckpt_path, {
                "generators": {name: m.state_dict() for name, m in generators.items()},
                "critics": {name: m.state_dict() for name, m in critics.items()},
                "opt_g": {name: o.state_dict() for name, o in opt_g.items()},
                "opt_c": {name: o.state_dict() for name, o in opt_c.items()},
                "step": step, "positions": dict(positions), "history": history,
                "rng": checkpoint.rng_state(), "config": dataclasses.asdict(cfg),
            })
    bar.close()
    return AdversarialResult(history=history, steps=step)
