"""GAN losses as pure functions, and GAN methods: (d_loss, g_loss) pairs the GAN trainer takes.

A method (STYLE.md item 2) is a `GANMethod`: `d_loss(D, real, fake, augment) -> (loss, logs)`,
`g_loss(D, fake, augment) -> (loss, logs)` and the `augment` that the trainer hands
them (and uses for R1). Images are in [-1, 1]. `nonsaturating(policy)` is the
non-saturating logistic loss of StyleGAN2 with DiffAugment on D's inputs; policy ""
is the un-augmented baseline. ContraD adds its own method with the same signature.
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

__all__ = ["ns_d_loss", "ns_g_loss", "r1_penalty", "GANMethod", "nonsaturating", "identity"]


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
    """
    d_loss: DLoss
    g_loss: GLoss | None
    name: str
    augment: Augment = identity


def _ns_d(D: nn.Module, real: Tensor, fake: Tensor, augment: Augment) -> tuple[Tensor, Logs]:
    # Two forwards, never one on cat([real, fake]): the minibatch-stddev layer would mix them.
    logits_real = D(augment(real))
    logits_fake = D(augment(fake))
    loss = ns_d_loss(logits_real, logits_fake)
    return loss, {"d/loss": loss.item(), "d/logits_real": logits_real.float().mean().item(),
                  "d/logits_fake": logits_fake.float().mean().item()}


def _ns_g(D: nn.Module, fake: Tensor, augment: Augment) -> tuple[Tensor, Logs]:
    loss = ns_g_loss(D(augment(fake)))
    return loss, {"g/loss": loss.item()}


def nonsaturating(policy: str = "color,translation,cutout") -> GANMethod:
    """Non-saturating logistic GAN with DiffAugment `policy` on every D input (real and fake, D and G steps).

    The DiffAugment default for 10% CIFAR-10 is "color,translation,cutout"; "" gives
    the baseline without augmentation.
    """
    names = [p.strip() for p in policy.split(",") if p.strip()]
    unknown = [p for p in names if p not in DIFF_AUGMENT_POLICIES]
    if unknown:
        raise ValueError(f"unknown DiffAugment policy {unknown}; valid: {sorted(DIFF_AUGMENT_POLICIES)}")
    if not names:
        return GANMethod(_ns_d, _ns_g, name="baseline")
    policy = ",".join(names)
    return GANMethod(_ns_d, _ns_g, name=f"diffaugment[{policy}]",
                     augment=functools.partial(diff_augment, policy=policy))
