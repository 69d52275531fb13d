"""GAN losses as pure functions, and GAN methods: (d_loss, g_loss) pairs the GAN trainer takes.

A method (STYLE.md item 2) is a `GANMethod`: `d_loss(D, real, fake, augment) -> (loss, logs)`,
`g_loss(D, fake, augment) -> (loss, logs)` and the `augment` that the trainer hands
them (and uses for R1). Images are in [-1, 1]. `nonsaturating(policy)` is the
non-saturating logistic loss of StyleGAN2 with DiffAugment on D's inputs; policy ""
is the un-augmented baseline. `hinge(policy)` is the hinge loss of SNGAN / BigGAN /
IC-GAN. `cr()` and `bcr()` add consistency regularisation (CR, Zhang et al. 2020) and
balanced CR (bCR, Zhao et al. 2020) to either loss: D's loss sees clean images and a
penalty asks D to score each image and its transformed copy T(x) alike (T:
`hflip_translation`). ContraD adds its own method with the same signature.

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

from shared.views import DIFF_AUGMENT_POLICIES, diff_augment, rand_translation, random_horizontal_flip

Augment = Callable[[Tensor], Tensor]
Logs = dict[str, float]
DLoss = Callable[[nn.Module, Tensor, Tensor, Augment], tuple[Tensor, Logs]]
GLoss = Callable[[nn.Module, Tensor, Augment], tuple[Tensor, Logs]]

__all__ = ["ns_d_loss", "ns_g_loss", "hinge_d_loss", "hinge_g_loss", "r1_penalty", "consistency_penalty",
           "balanced_consistency_penalty", "GANMethod", "nonsaturating", "hinge", "cr", "bcr", "hflip_translation",
           "identity", "discriminate"]


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


def consistency_penalty(logits: Tensor, logits_transformed: Tensor) -> Tensor:
    """Consistency regularisation (Zhang et al. 2020, "Consistency Regularization for GANs"), before its weight.

        CR = E_x (D(x) - D(T(x)))^2

    the mean over the batch of the squared difference between D's logit of each image and
    of its transformed copy T(x) (||D(x) - D(T(x))||^2 with D's scalar output; the official
    ContraD baselines penalise the logit, not the penultimate features). Neither side is
    detached: the penalty trains D through both, as those baselines do. Half-precision
    logits are promoted to float32.

    Args:
        logits: (N,) D's logits of the images.
        logits_transformed: (N,) D's logits of T(images), row i from image i.
    """
    assert logits.ndim == 1 and logits.shape == logits_transformed.shape, \
        f"consistency_penalty: need two (N,) logits, got {tuple(logits.shape)} and {tuple(logits_transformed.shape)}"
    return (_at_least_fp32(logits) - _at_least_fp32(logits_transformed)).square().mean()


def balanced_consistency_penalty(logits_real: Tensor, logits_real_transformed: Tensor, logits_fake: Tensor,
                                 logits_fake_transformed: Tensor, lambda_real: float = 10.0,
                                 lambda_fake: float = 10.0) -> Tensor:
    """Balanced consistency regularisation (bCR; Zhao et al. 2020, "Improved Consistency Regularization for GANs").

        bCR = lambda_real E_x (D(x) - D(T(x)))^2 + lambda_fake E_z (D(G(z)) - D(T(G(z))))^2

    `consistency_penalty` on the reals and on the fakes, each the mean over its own batch,
    weighted (both 10 in the paper and in the official ContraD baselines, `lbd` / `lbd2`).
    """
    return (lambda_real * consistency_penalty(logits_real, logits_real_transformed)
            + lambda_fake * consistency_penalty(logits_fake, logits_fake_transformed))


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


# ---------------------------------------------------------------- consistency regularisation (CR, bCR)

def hflip_translation(x: Tensor, ratio: float = 0.125, generator: torch.Generator | None = None) -> Tensor:
    """T of CR and bCR in the ContraD baselines ("HFlip, Trans"): flip, then shift, each drawn per image.

    Each image is mirrored left-right with probability 1/2 (`random_horizontal_flip`), then
    shifted by integers dy, dx ~ U{-s, ..., s} drawn independently, s = round(ratio * side)
    (`rand_translation`: 4 pixels on 32 x 32 images, the official `max_pixels`); pixels
    shifted in from outside the image are filled by reflection at the image edge, the edge
    pixel repeated (`fill="reflect"`, numpy's "symmetric" padding), as the official layer
    (HorizontalFlipRandomCrop) fills them.
    """
    return rand_translation(random_horizontal_flip(x, 0.5, generator), ratio, generator, fill="reflect")


def _consistency_d_loss(D: nn.Module, real: Tensor, fake: Tensor, augment: Augment, *,
                        loss: Callable[[Tensor, Tensor], Tensor], lambda_real: float, lambda_fake: float,
                        transform: Augment, c_real: Tensor | None = None,
                        c_fake: Tensor | None = None) -> tuple[Tensor, Logs]:
    # The adversarial part is the baseline's (`_logit_d_loss`); the penalty reuses its logits as the
    # clean side, so its gradient flows through both forwards (the official penalty does the same).
    fake = fake.detach()  # the D step never trains G (the official loss detaches the fakes too)
    x_real, x_fake = augment(real), augment(fake)
    logits_real = discriminate(D, x_real, c_real)
    logits_fake = discriminate(D, x_fake, c_fake)
    adversarial = loss(logits_real, logits_fake)
    value = adversarial
    logs = {"d/loss": adversarial.item(), "d/logits_real": logits_real.float().mean().item(),
            "d/logits_fake": logits_fake.float().mean().item()}
    # A zero weight skips its term entirely (no forward, no random draws): the method is then the baseline.
    if lambda_real > 0:
        cr_real = consistency_penalty(logits_real, discriminate(D, transform(x_real), c_real))
        value = value + lambda_real * cr_real
        logs["d/cr_real"] = cr_real.item()
    if lambda_fake > 0:
        cr_fake = consistency_penalty(logits_fake, discriminate(D, transform(x_fake), c_fake))
        value = value + lambda_fake * cr_fake
        logs["d/cr_fake"] = cr_fake.item()
    return value, logs


_LOSSES = {"nonsaturating": (ns_d_loss, _ns_g, ""), "hinge": (hinge_d_loss, _hinge_g, "hinge+")}


def _consistency_method(name: str, lambda_real: float, lambda_fake: float, loss: str,
                        transform: Augment) -> GANMethod:
    for key, value in (("lambda_real", lambda_real), ("lambda_fake", lambda_fake)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
            raise ValueError(f"{name}: {key} must be a number >= 0, got {value!r}")
    if loss not in _LOSSES:
        raise ValueError(f"{name}: unknown loss {loss!r}; valid: {sorted(_LOSSES)}")
    d_loss, g_loss, prefix = _LOSSES[loss]
    return GANMethod(functools.partial(_consistency_d_loss, loss=d_loss, lambda_real=float(lambda_real),
                                       lambda_fake=float(lambda_fake), transform=transform),
                     g_loss, name=prefix + name)


def cr(lambda_real: float = 10.0, loss: str = "nonsaturating", transform: Augment = hflip_translation) -> GANMethod:
    """Consistency regularisation on the reals (Zhang et al. 2020): L_D = L_adv + lambda_real CR(reals).

    L_adv is `loss`'s D loss ("nonsaturating": `ns_d_loss`, as the official ContraD CIFAR
    baselines; "hinge": `hinge_d_loss`) on the clean real and fake images; CR is
    `consistency_penalty` between D(x) (the same forward as L_adv) and D(T(x)), T =
    `transform` drawn per image (default `hflip_translation`). G's loss is the baseline's,
    on clean fakes; the method's `augment` is the identity (no augmentation outside the
    penalty). lambda_real is the paper's lambda (10; the official `lbd`); 0 gives the baseline
    exactly (same losses, gradients and random draws). Names: "cr", "hinge+cr".
    """
    return _consistency_method("cr", lambda_real, 0.0, loss, transform)


def bcr(lambda_real: float = 10.0, lambda_fake: float = 10.0, loss: str = "nonsaturating",
        transform: Augment = hflip_translation) -> GANMethod:
    """Balanced consistency regularisation (Zhao et al. 2020): `cr` plus the same penalty on the fakes.

        L_D = L_adv + lambda_real CR(reals) + lambda_fake CR(fakes)

    (`balanced_consistency_penalty`); the fakes are the D step's detached ones, each with its
    own draw of T. lambda_real = lambda_fake = 10 (the paper; the official `lbd`, `lbd2`).
    G's loss is the baseline's. Names: "bcr", "hinge+bcr".
    """
    return _consistency_method("bcr", lambda_real, lambda_fake, loss, transform)
