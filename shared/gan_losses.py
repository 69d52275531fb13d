"""GAN losses as pure functions, and GAN methods: (d_loss, g_loss) pairs the GAN trainer takes.

A method (STYLE.md item 2) is a `GANMethod`: `d_loss(D, real, fake, augment) -> (loss, logs)`,
`g_loss(D, fake, augment) -> (loss, logs)` and the `augment` that the trainer hands
them (and uses for R1). Images are in [-1, 1]. `nonsaturating(policy)` is the
non-saturating logistic loss of StyleGAN2 with DiffAugment on D's inputs; policy ""
is the un-augmented baseline. `hinge(policy)` is the hinge loss of SNGAN / BigGAN /
IC-GAN. ContraD adds its own method with the same signature.

Conditional GANs: in a conditional run the trainer also passes the conditions as
keywords, `d_loss(..., c_real=, c_fake=)` and `g_loss(..., c_fake=)`, and the losses
call `D(x, c)` through `discriminate`; an unconditional run passes no keywords, so
a method written for unconditional GANs only (ContraD) keeps its four-argument form.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from shared.views import DIFF_AUGMENT_POLICIES, diff_augment

Augment = Callable[[Tensor], Tensor]
Logs = dict[str, float]
DLoss = Callable[[nn.Module, Tensor, Tensor, Augment], tuple[Tensor, Logs]]
GLoss = Callable[[nn.Module, Tensor, Augment], tuple[Tensor, Logs]]

__all__ = ["ns_d_loss", "ns_g_loss", "hinge_d_loss", "hinge_g_loss", "r1_penalty", "GANMethod", "nonsaturating",
           "hinge", "identity", "discriminate"]


def _at_least_fp32(x: Tensor) -> Tensor:
    return x.to(torch.promote_types(x.dtype, torch.float32))


# ---------------------------------------------------------------- pure losses

def ns_d_loss(logits_real: Tensor, logits_fake: Tensor) -> Tensor:
    """Discriminator loss of the non-saturating GAN (Goodfellow et al. 2014; StyleGAN2).

        L_D = E_real[softplus(-D(x))] + E_fake[softplus(D(G(z)))]
            = -E log sigmoid(D(x)) - E log(1 - sigmoid(D(G(z))))

    Each term is the mean over its own batch (the two batches may differ in size).
    Half-precision logits (autocast) are promoted to float32.

    Args:
        logits_real: (N,) logits of real images.
        logits_fake: (M,) logits of generated images.
    """
    assert logits_real.ndim == 1 and logits_fake.ndim == 1, \
        f"ns_d_loss: logits must be 1-D, got {tuple(logits_real.shape)} and {tuple(logits_fake.shape)}"
    return F.softplus(-_at_least_fp32(logits_real)).mean() + F.softplus(_at_least_fp32(logits_fake)).mean()


def ns_g_loss(logits_fake: Tensor) -> Tensor:
    """Generator loss of the non-saturating GAN: E[softplus(-D(G(z)))] = -E log sigmoid(D(G(z)))."""
    assert logits_fake.ndim == 1, f"ns_g_loss: logits must be 1-D, got {tuple(logits_fake.shape)}"
    return F.softplus(-_at_least_fp32(logits_fake)).mean()


def hinge_d_loss(logits_real: Tensor, logits_fake: Tensor) -> Tensor:
    """Discriminator hinge loss (Lim & Ye 2017; Miyato et al. 2018; BigGAN and IC-GAN's `loss_hinge_dis`).

        L_D = E_real[max(0, 1 - D(x))] + E_fake[max(0, 1 + D(G(z)))]

    Each term is the mean over its own batch; half-precision logits are promoted to float32.

    Args:
        logits_real: (N,) logits of real images.
        logits_fake: (M,) logits of generated images.
    """
    assert logits_real.ndim == 1 and logits_fake.ndim == 1, \
        f"hinge_d_loss: logits must be 1-D, got {tuple(logits_real.shape)} and {tuple(logits_fake.shape)}"
    return F.relu(1 - _at_least_fp32(logits_real)).mean() + F.relu(1 + _at_least_fp32(logits_fake)).mean()


def hinge_g_loss(logits_fake: Tensor) -> Tensor:
    """Generator loss of the hinge GAN: L_G = -E[D(G(z))] (BigGAN and IC-GAN's `loss_hinge_gen`)."""
    assert logits_fake.ndim == 1, f"hinge_g_loss: logits must be 1-D, got {tuple(logits_fake.shape)}"
    return -_at_least_fp32(logits_fake).mean()


def r1_penalty(logits_real: Tensor, real_images: Tensor) -> Tensor:
    """R1 gradient penalty (Mescheder et al. 2018), before its weight gamma / 2.

        R1 = E_x ||grad_x D(x)||^2

    the mean over the batch of the squared gradient norm of each sample's logit with
    respect to its own input (the gradient of sum(logits) separates per sample as long
    as D does not mix samples; StyleGAN2's minibatch-stddev layer mixes them slightly,
    and the official code takes the same gradient). The gradient graph is kept
    (create_graph) so the penalty trains D.

    Args:
        logits_real: (N,) logits computed from `real_images`.
        real_images: (N, ...) the tensor D saw, with requires_grad set before D ran.
    """
    assert logits_real.ndim == 1 and logits_real.shape[0] == real_images.shape[0], \
        f"r1_penalty: need (N,) logits for N images, got {tuple(logits_real.shape)} and {tuple(real_images.shape)}"
    assert real_images.requires_grad, "r1_penalty: real_images must require grad before D runs on them"
    (grad,) = torch.autograd.grad(logits_real.sum(), real_images, create_graph=True)
    return _at_least_fp32(grad).square().flatten(1).sum(dim=1).mean()


# ---------------------------------------------------------------- methods

def identity(x: Tensor) -> Tensor:
    return x


@dataclasses.dataclass(frozen=True)
class GANMethod:
    """What the GAN trainer trains with.

    d_loss(D, real, fake, augment) -> (loss, logs): D's loss on a real and a (detached) fake batch.
    g_loss(D, fake, augment) -> (loss, logs): G's loss on a fake batch that carries G's graph;
        None trains D alone (G is never updated), e.g. ContraD's SimCLR-only reference.
    augment: applied to D's inputs; the trainer passes it to both losses and to R1.
    Log keys are namespaced ("d/...", "g/..."); values are Python floats.

    A conditional run calls `d_loss(..., c_real=c_real, c_fake=c_fake)` and
    `g_loss(..., c_fake=c_fake)` (c: (B,) class labels or (B, d) features, one per
    image); the built-in methods accept these keywords, ContraD's do not.
    """
    d_loss: DLoss
    g_loss: GLoss | None
    name: str
    augment: Augment = identity


def discriminate(D: nn.Module, x: Tensor, c: Tensor | None = None) -> Tensor:
    """D's logits: `D(x)` for an unconditional D (c None), `D(x, c)` for a conditional one."""
    return D(x) if c is None else D(x, c)


def _logit_d_loss(D: nn.Module, real: Tensor, fake: Tensor, augment: Augment, *,
                  loss: Callable[[Tensor, Tensor], Tensor], c_real: Tensor | None = None,
                  c_fake: Tensor | None = None) -> tuple[Tensor, Logs]:
    # Two forwards, never one on cat([real, fake]): the minibatch-stddev layer would mix them.
    logits_real = discriminate(D, augment(real), c_real)
    logits_fake = discriminate(D, augment(fake), c_fake)
    value = loss(logits_real, logits_fake)
    return value, {"d/loss": value.item(), "d/logits_real": logits_real.float().mean().item(),
                   "d/logits_fake": logits_fake.float().mean().item()}


def _logit_g_loss(D: nn.Module, fake: Tensor, augment: Augment, *, loss: Callable[[Tensor], Tensor],
                  c_fake: Tensor | None = None) -> tuple[Tensor, Logs]:
    value = loss(discriminate(D, augment(fake), c_fake))
    return value, {"g/loss": value.item()}


_ns_d = functools.partial(_logit_d_loss, loss=ns_d_loss)
_ns_g = functools.partial(_logit_g_loss, loss=ns_g_loss)
_hinge_d = functools.partial(_logit_d_loss, loss=hinge_d_loss)
_hinge_g = functools.partial(_logit_g_loss, loss=hinge_g_loss)


def _diff_augment_policy(policy: str) -> str:
    """The canonical "a,b,c" form of a DiffAugment policy; "" for none. Unknown names raise."""
    names = [p.strip() for p in policy.split(",") if p.strip()]
    unknown = [p for p in names if p not in DIFF_AUGMENT_POLICIES]
    if unknown:
        raise ValueError(f"unknown DiffAugment policy {unknown}; valid: {sorted(DIFF_AUGMENT_POLICIES)}")
    return ",".join(names)


def nonsaturating(policy: str = "color,translation,cutout") -> GANMethod:
    """Non-saturating logistic GAN with DiffAugment `policy` on every D input (real and fake, D and G steps).

    The DiffAugment default for 10% CIFAR-10 is "color,translation,cutout"; "" gives
    the baseline without augmentation.
    """
    policy = _diff_augment_policy(policy)
    if not policy:
        return GANMethod(_ns_d, _ns_g, name="baseline")
    return GANMethod(_ns_d, _ns_g, name=f"diffaugment[{policy}]",
                     augment=functools.partial(diff_augment, policy=policy))


def hinge(policy: str = "") -> GANMethod:
    """Hinge GAN (`hinge_d_loss`, `hinge_g_loss`), optionally with DiffAugment `policy` on every D input.

    The default "" is IC-GAN's and BigGAN's setting (no augmentation; IC-GAN's code has a
    DiffAugment option, off in its ImageNet configs). Names: "hinge", "hinge+diffaugment[<policy>]".
    """
    policy = _diff_augment_policy(policy)
    if not policy:
        return GANMethod(_hinge_d, _hinge_g, name="hinge")
    return GANMethod(_hinge_d, _hinge_g, name=f"hinge+diffaugment[{policy}]",
                     augment=functools.partial(diff_augment, policy=policy))
