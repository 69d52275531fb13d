"""ContraD's three discriminator loss terms as pure functions (Jeong & Shin, ICLR 2021).

    L_D = L_con+ + lambda_a L_con- + L_dis,    L_G = -E log sigmoid(h_d(D(v_f)))

`con_pos` and `con_neg` take the projections of one D forward over the batch
[real view 1; real view 2; fake] (N each); `dis_loss` takes the score head's logits.
Sizes come from the tensors. Semantics follow the official code (jh-jeong/ContraD,
training/gan/contrad.py and training/criterion.py; read, not copied): projections
are L2-normalised, one temperature (`--temp`, 0.1) serves both contrastive terms,
and an anchor's own similarity is removed from its softmax (the official code fills
the diagonal with -5e4 after dividing by the temperature; here it is -inf, the same
value to float precision since |logits| <= 1 / temperature).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from shared.gan_losses import ns_d_loss
from shared.losses import nt_xent

__all__ = ["con_pos", "con_neg", "dis_loss"]


def _at_least_fp32(z: Tensor) -> Tensor:
    return z.to(torch.promote_types(z.dtype, torch.float32))


def con_pos(z1: Tensor, z2: Tensor, temperature: float = 0.1) -> Tensor:
    """L_con+ : SimCLR's NT-Xent on the two views of the real images (h_r's projections).

    With z = normalize([z1; z2]) (2N rows) and sim(u, v) = u.v / tau, anchor i's
    positive is the other view of its image, its denominator every other row:

        L_con+ = 1/(2N) sum_i -log( exp(sim(z_i, z_p(i))) / sum_{k != i} exp(sim(z_i, z_k)) )

    The mean over all 2N anchors is the official reduction (criterion.nt_xent:
    minus the sum of both positive diagonals of the log-softmax, divided by 2N).
    This is `shared.losses.nt_xent` at ContraD's temperature.

    Args:
        z1, z2: (N, D) projections of real view 1 and view 2; row n is the same image. N >= 2.
        temperature: tau (the official `--temp`, 0.1).
    """
    return nt_xent(z1, z2, temperature)


def con_neg(real1: Tensor, real2: Tensor, fake: Tensor, temperature: float = 0.1) -> Tensor:
    """L_con- : supervised contrastive loss (Khosla et al. 2020) with the fakes as one class (h_f's projections).

    The 3N rows z = normalize([real1; real2; fake]) enter every denominator, but only
    the N fake rows are anchors. For fake anchor i, every other fake j is a positive
    with weight 1/(N-1), and the denominator runs over all 3N - 1 other rows:

        L_con-(i) = -1/(N-1) sum_{j fake, j != i} log( exp(z_i.z_j / tau) / sum_{k != i} exp(z_i.z_k / tau) )
        L_con- = 1/N sum_{i fake} L_con-(i)

    Checked against the official `supcon_fake`: a (3N, 3N) similarity matrix whose
    rows 2N.. (the fakes) are kept, a positive mask over the fake-fake block minus its
    diagonal normalised to rows summing to 1 (1/(N-1) each), log-softmax per row,
    then minus the masked row sums averaged over the N fake anchors. Real rows are
    never anchors: the reals only act as negatives of the fakes here.

    Args:
        real1, real2, fake: (N, D) projections of real view 1, real view 2 and the fakes. N >= 2.
        temperature: tau (the official `--temp`, 0.1, shared with L_con+).
    """
    assert fake.ndim == 2, f"con_neg: fake must be (N, D), got {tuple(fake.shape)}"
    assert real1.shape == fake.shape and real2.shape == fake.shape, \
        f"con_neg: real1, real2 and fake must have one shape (N, D), got " \
        f"{tuple(real1.shape)}, {tuple(real2.shape)}, {tuple(fake.shape)}"
    n = fake.shape[0]
    assert n >= 2, f"con_neg: needs at least 2 fakes (each needs another fake as positive), got N={n}"
    assert temperature > 0, f"con_neg: temperature must be > 0, got {temperature}"
    z = F.normalize(_at_least_fp32(torch.cat([real1, real2, fake], dim=0)), dim=1)
    anchors = z[2 * n:]
    logits = anchors @ z.T / temperature  # (N, 3N): fake anchors against every row
    self_mask = torch.zeros_like(logits, dtype=torch.bool)
    self_mask[:, 2 * n:] = torch.eye(n, dtype=torch.bool, device=z.device)
    log_prob = F.log_softmax(logits.masked_fill(self_mask, float("-inf")), dim=1)
    # Positives: the fake-fake block without the diagonal (whose -inf is replaced by 0, not multiplied).
    positives = log_prob[:, 2 * n:].masked_fill(self_mask[:, 2 * n:], 0.0)
    return -(positives.sum(dim=1) / (n - 1)).mean()


def dis_loss(logit_real: Tensor, logit_fake: Tensor) -> Tensor:
    """L_dis : the non-saturating GAN loss of the score head h_d.

        L_dis = E[softplus(-d_real)] + E[softplus(d_fake)]
              = -E log sigmoid(h_d(sg(D(v_r)))) - E log(1 - sigmoid(h_d(sg(D(v_f)))))

    each a mean over its own batch (official `options['loss'] == 'nonsat'`, with
    d_real from the first real view only). The stop-gradient sg is the caller's:
    the score head must see detached features in the D step.

    Args:
        logit_real: (N,) score-head logits of real view 1.
        logit_fake: (M,) score-head logits of the fakes.
    """
    return ns_d_loss(logit_real, logit_fake)
