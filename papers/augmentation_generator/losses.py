"""The losses of the generator game, eqs. (7)-(13), and the game as the two-player trainer's method.

Pure functions first (tensors in, a scalar out, no config), each naming its equation and, where the
printed form is wrong, the typo and what is implemented. Then `augmentation_game`, the
`shared.trainers.adversarial.AdversarialMethod` of Algorithm 1: the trainer owns the update order
(critics on detached outputs, the generator loss through frozen critics and F, simultaneous steps).

D_f, D_p return logits l; D = sigmoid(l), so -log D = softplus(-l) and -log(1 - D) = softplus(l),
computed as binary cross-entropy with logits (stable where D saturates).
"""
from __future__ import annotations

from typing import Mapping

import torch
import torch.nn.functional as Fn
from torch import Tensor, nn

from shared.device import prepare_batch
from shared.trainers.adversarial import AdversarialMethod


# ---------------------------------------------------------------- pure losses

def _bce(logits: Tensor, real: bool) -> Tensor:
    """mean -log D (real) or mean -log(1 - D) (fake) over a batch of logits (N,)."""
    if logits.ndim != 1:
        raise ValueError(f"expected one logit per sample (N,), got {tuple(logits.shape)}")
    logits = logits.float()
    return Fn.binary_cross_entropy_with_logits(logits, torch.full_like(logits, float(real)))


def critic_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """-E log D(F(real)) - E log(1 - D(F(fake))): the form of eqs. (8) and (9).

    (8) l_Df = -log D_f(F(x~_f)) - log(1 - D_f(F(G_A(x_p, z)))): real = fine-tuning images, fake = augmented
        pre-training images. (9) l_Dp = -log D_p(F(x_p)) - log(1 - D_p(F(G_E(x~_f)))): real = pre-training
        images, fake = eliminated fine-tuning images. Eq. (7) is their sum; each critic's parameters appear in
        one term only, so each critic minimises its own. The expectation is a mean over each batch.
    """
    return _bce(real_logits, True) + _bce(fake_logits, False)


def nonsaturating_loss(fake_logits: Tensor) -> Tensor:
    """-E log D(F(fake)): the generator side's adversarial terms, eqs. (11) and (12).

    (11) is printed l_GA = -log(D_f o G_A o F(x_p, z)), a composition-order typo (G_A takes an image and z,
    F an image): implemented as -log D_f(F(G_A(x_p, z))), the non-saturating GAN loss.
    (12) l_GE = -log D_p(F(G_E(x~_f))) as printed (eq. (10) passes it a z it does not use).
    """
    return _bce(fake_logits, True)


def l1(a: Tensor, b: Tensor) -> Tensor:
    """||a - b||_1 as a mean over elements (CycleGAN's nn.L1Loss; the paper does not say which reduction)."""
    if a.shape != b.shape:
        raise ValueError(f"L1 of tensors of different shapes {tuple(a.shape)} and {tuple(b.shape)}")
    return (a.float() - b.float()).abs().mean()


def cycle_losses(x_f: Tensor, reconstructed_f: Tensor, x_p: Tensor, eliminated_augmented: Tensor, z: Tensor,
                 latent_augmented: Tensor) -> dict[str, Tensor]:
    """The three terms of l_r, eq. (13), each a mean absolute error.

    f: ||G_A(G_E(x~_f), G_L(x~_f)) - x~_f||_1 (`reconstructed_f` = G_A(G_E(x~_f), G_L(x~_f)));
    p: ||G_E(G_A(x_p, z)) - x_p||_1 (`eliminated_augmented`); z: ||G_L(G_A(x_p, z)) - z||_1
    (`latent_augmented`). Eq. (10) writes l_r(x_p, x~_f, z), eq. (13) l_r(x~_f, x_p, z): the same terms.
    """
    return {"f": l1(reconstructed_f, x_f), "p": l1(eliminated_augmented, x_p), "z": l1(latent_augmented, z)}


def identity_losses(x_p: Tensor, eliminated_p: Tensor, x_f: Tensor, augmented_f: Tensor) -> dict[str, Tensor]:
    """CycleGAN's identity terms (not in the paper; `game.identity`), each a mean absolute error: a generator
    given an image of its own target domain should return it. e: ||G_E(x_p) - x_p||_1 (G_E maps towards X_p);
    a: ||G_A(x~_f, z) - x~_f||_1 (G_A maps towards X~_f)."""
    return {"e": l1(eliminated_p, x_p), "a": l1(augmented_f, x_f)}


def generator_objective(adv_a: Tensor, adv_e: Tensor, cycle: Mapping[str, Tensor], lam: float,
                        identity: Mapping[str, Tensor] | None = None, identity_weight: float = 0.0) -> Tensor:
    """Eq. (10): l_GA + l_GE + lam * l_r with l_r = the sum of the three cycle terms (eq. (13)); with
    `identity_weight` > 0, plus identity_weight * lam * the identity terms (CycleGAN's form: its
    lambda_identity 0.5 is a fraction of the cycle weight). 0: the paper's objective."""
    loss = adv_a + adv_e + lam * sum(cycle.values())
    if identity_weight > 0:
        if not identity:
            raise ValueError("identity_weight > 0 needs the identity terms")
        loss = loss + identity_weight * lam * sum(identity.values())
    return loss


def balanced_accuracy(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """A critic's accuracy, half on reals (D > 1/2) and half on fakes (D < 1/2); 0.5 means it cannot tell."""
    return ((real_logits > 0).float().mean() + (fake_logits < 0).float().mean()) / 2


# ---------------------------------------------------------------- the game as the trainer's method

def _images(x: Tensor) -> Tensor:
    """uint8 loader batches -> float images in [0, 1] (the generators' and F's range)."""
    if x.dtype != torch.uint8:
        raise ValueError(f"expected uint8 image batches from the loaders, got {x.dtype}")
    return x.float() / 255


def augmentation_game(F: nn.Module, z_dim: int, lam: float,
                      real_features: Mapping[str, Tensor] | None = None, identity: float = 0.0) -> AdversarialMethod:
    """Algorithm 1 as an `AdversarialMethod` over loaders "p" (X_p) and "f" (X~_f), each yielding (x, y, index).

    forward runs the generator side once: z ~ U[0, 1]^z_dim (global RNG), G_A(x_p, z), (G_E, G_L)(x~_f)
    from the shared trunk, and F's features of the two fakes (with their graph: the generator loss
    backpropagates through F into G_A and G_E) and of the two real batches. `real_features`
    ({"p": (N_p, d), "f": (N_f, d)}, rows in the loaders' index order) holds F of every real image,
    computed once since F is frozen; without it F runs on the real batches. The critics get the
    trainer's detached copy of these outputs, so they see detached fakes; F of a detached fake is the
    detached F of the fake, F being frozen and in eval mode. The generator loss adds the cycle terms,
    which run G_A and G_E / G_L again; `identity` > 0 adds CycleGAN's identity terms (:func:`identity_losses`,
    not the paper's) at `identity` x `lam`.

    Log keys: "D_f/real", "D_f/fake", "D_f/acc", the same for D_p, "g/adv_a", "g/adv_e", "g/cycle_f",
    "g/cycle_p", "g/cycle_z", "g/cycle" (the trainer adds "<critic>/total" and "g/total").
    """
    def embed(x: Tensor) -> Tensor:  # channels_last input: a third faster on the CPU (oneDNN), measured
        return F(prepare_batch(x, x.device))

    def features(name: str, x: Tensor, index: Tensor) -> Tensor:
        if real_features is None:
            with torch.no_grad():
                return embed(x)
        return real_features[name].index_select(0, index.to(real_features[name].device))

    def forward(generators: Mapping[str, nn.Module], batch) -> dict[str, Tensor]:
        (x_p, _, index_p), (x_f, _, index_f) = batch["p"], batch["f"]
        x_p, x_f = _images(x_p), _images(x_f)
        z = torch.rand(x_p.shape[0], z_dim, device=x_p.device)
        augmented = generators["G_A"](x_p, z)
        eliminated, latent = generators["G_EL"](x_f)
        return {"x_p": x_p, "x_f": x_f, "z": z, "augmented": augmented, "eliminated": eliminated,
                "latent": latent, "h_p": features("p", x_p, index_p), "h_f": features("f", x_f, index_f),
                "h_augmented": embed(augmented), "h_eliminated": embed(eliminated)}

    def d_f_loss(D_f: nn.Module, F_: nn.Module, out: Mapping[str, Tensor]):  # eq. (8)
        real, fake = D_f(out["h_f"]), D_f(out["h_augmented"])
        return _critic_logs("D_f", real, fake)

    def d_p_loss(D_p: nn.Module, F_: nn.Module, out: Mapping[str, Tensor]):  # eq. (9)
        real, fake = D_p(out["h_p"]), D_p(out["h_eliminated"])
        return _critic_logs("D_p", real, fake)

    def generator_loss(generators, critics, F_, out):  # eq. (10)
        terms = generator_terms(generators, critics, out, identity=identity > 0)
        cycle = {k: terms[f"cycle_{k}"] for k in ("f", "p", "z")}
        same = {k: terms[f"identity_{k}"] for k in ("e", "a") if f"identity_{k}" in terms}
        loss = generator_objective(terms["adv_a"], terms["adv_e"], cycle, lam, same, identity)
        logs = {f"g/{k}": v.item() for k, v in terms.items()}
        logs["g/cycle"] = sum(v.item() for v in cycle.values())
        return loss, logs

    return AdversarialMethod(forward=forward, critic_losses={"D_f": d_f_loss, "D_p": d_p_loss},
                             generator_loss=generator_loss, name="augmentation_generator")


def _critic_logs(name: str, real: Tensor, fake: Tensor):
    loss = critic_loss(real, fake)
    return loss, {f"{name}/real": _bce(real, True).item(), f"{name}/fake": _bce(fake, False).item(),
                  f"{name}/acc": balanced_accuracy(real, fake).item()}


def generator_terms(generators: Mapping[str, nn.Module], critics: Mapping[str, nn.Module],
                    out: Mapping[str, Tensor], identity: bool = False) -> dict[str, Tensor]:
    """The terms of eq. (10) on `forward`'s outputs (with their graph): adv_a (11), adv_e (12), cycle_f/p/z (13);
    with `identity`, also identity_e / identity_a (:func:`identity_losses`; z of the batch for G_A's)."""
    G_A, G_EL = generators["G_A"], generators["G_EL"]
    reconstructed_f = G_A(out["eliminated"], out["latent"])  # G_A(G_E(x~_f), G_L(x~_f))
    eliminated_augmented, latent_augmented = G_EL(out["augmented"])  # G_E(G_A(x_p, z)), G_L(G_A(x_p, z))
    cycle = cycle_losses(out["x_f"], reconstructed_f, out["x_p"], eliminated_augmented, out["z"], latent_augmented)
    terms = {"adv_a": nonsaturating_loss(critics["D_f"](out["h_augmented"])),
             "adv_e": nonsaturating_loss(critics["D_p"](out["h_eliminated"])),
             **{f"cycle_{k}": v for k, v in cycle.items()}}
    if identity:
        x_f = out["x_f"]
        z = out["z"] if len(out["z"]) == len(x_f) else torch.rand(len(x_f), out["z"].shape[1], device=x_f.device)
        same = identity_losses(out["x_p"], G_EL(out["x_p"])[0], x_f, G_A(x_f, z))
        terms.update({f"identity_{k}": v for k, v in same.items()})
    return terms
