"""Self-supervised losses as pure functions of the views' embeddings.

Sizes come from the tensors; nothing is fixed at construction. Half-precision
inputs (autocast) are promoted to float32 before the similarity / covariance
products: with temperature 0.1 the logits reach 10, where bf16 keeps about two
decimal digits. float32 and float64 inputs are used as given.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["byol_loss", "infonce_with_queue", "nt_xent", "vicreg"]


def _at_least_fp32(z: torch.Tensor) -> torch.Tensor:
    return z.to(torch.promote_types(z.dtype, torch.float32))


def _assert_pair(z1: torch.Tensor, z2: torch.Tensor, name: str) -> None:
    assert z1.ndim == 2, f"{name}: z1 must be (N, D), got shape {tuple(z1.shape)}"
    assert z1.shape == z2.shape, f"{name}: z1 and z2 must have the same shape, got {tuple(z1.shape)} and {tuple(z2.shape)}"
    assert z1.shape[0] >= 2, f"{name}: needs a batch of at least 2, got N={z1.shape[0]}"


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.5) -> torch.Tensor:
    """SimCLR's NT-Xent loss (normalised temperature-scaled cross-entropy).

    With the 2N embeddings z = [z1; z2], sim(u, v) = u.v / (|u| |v|) and
    temperature tau, each anchor i has the other view of its image as positive
    p(i) = i +- N and the remaining 2N - 2 samples as negatives:

        l(i) = -log( exp(sim(z_i, z_p(i)) / tau) / sum_{k != i} exp(sim(z_i, z_k) / tau) )
        L = 1/(2N) sum_i l(i)

    The mean over all 2N anchors matches the unofficial PyTorch SimCLR
    (Spijkervet/SimCLR, summed cross-entropy divided by 2N) and the paper's
    1/(2N) sum_k [l(2k-1, 2k) + l(2k, 2k-1)].

    Args:
        z1, z2: (N, D) projections of the two views; row n of each is the same image.
        temperature: tau (0.5 in gan_simclr, 0.1 in ContraD).

    Returns:
        Scalar loss.
    """
    _assert_pair(z1, z2, "nt_xent")
    assert temperature > 0, f"nt_xent: temperature must be > 0, got {temperature}"
    n = z1.shape[0]
    z = F.normalize(_at_least_fp32(torch.cat([z1, z2], dim=0)), dim=1)
    logits = z @ z.T / temperature
    # An anchor is never its own negative: -inf drops it from the softmax denominator.
    self_mask = torch.eye(2 * n, dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(self_mask, float("-inf"))
    idx = torch.arange(n, device=z.device)
    positives = torch.cat([idx + n, idx])
    return F.cross_entropy(logits, positives, reduction="mean")


def _off_diagonal(m: torch.Tensor) -> torch.Tensor:
    """The D*(D-1) off-diagonal entries of a (D, D) matrix, without a D x D mask.

    Dropping the first flat element leaves (D-1)(D+1) entries; in rows of D+1 the
    diagonal entries all fall in the last column.
    """
    d = m.shape[0]
    return m.flatten()[1:].view(d - 1, d + 1)[:, :-1]


def vicreg(
    z1: torch.Tensor,
    z2: torch.Tensor,
    sim_coeff: float = 25.0,
    std_coeff: float = 25.0,
    cov_coeff: float = 1.0,
    return_parts: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """VICReg loss (Bardes, Ponce, LeCun 2022), with the official code's semantics.

        l(Z, Z') = lambda s(Z, Z') + mu [v(Z) + v(Z')] + nu [c(Z) + c(Z')]

    with lambda = ``sim_coeff``, mu = ``std_coeff``, nu = ``cov_coeff`` (25, 25, 1):

    - invariance s: mean squared error over all N*D elements;
    - variance v(Z) = mean_j relu(1 - sqrt(Var(z_j) + 1e-4)), the unbiased variance
      over the batch; as in the official code each branch is halved, so the term
      is mu * [v(Z) + v(Z')] / 2 (the paper's equation has no 1/2);
    - covariance c(Z) = sum_{i != j} C(Z)_ij^2 / D with C(Z) = (Z - mean)^T (Z - mean) / (N - 1);
      the two branches are summed.

    Args:
        z1, z2: (N, D) expander outputs of the two views, N >= 2.
        sim_coeff, std_coeff, cov_coeff: lambda, mu, nu.
        return_parts: also return the unweighted terms.

    Returns:
        The scalar loss, or ``(loss, {"repr": s, "std": (v1 + v2) / 2, "cov": c1 + c2})``
        when ``return_parts``; the parts keep their graph (detach them to log).
    """
    _assert_pair(z1, z2, "vicreg")
    n, d = z1.shape
    z1 = _at_least_fp32(z1)
    z2 = _at_least_fp32(z2)

    repr_loss = F.mse_loss(z1, z2)

    z1 = z1 - z1.mean(dim=0)
    z2 = z2 - z2.mean(dim=0)
    # 1e-4 inside the sqrt keeps the gradient finite when a dimension collapses.
    std1 = torch.sqrt(z1.var(dim=0) + 1e-4)
    std2 = torch.sqrt(z2.var(dim=0) + 1e-4)
    std_loss = F.relu(1 - std1).mean() / 2 + F.relu(1 - std2).mean() / 2

    cov1 = (z1.T @ z1) / (n - 1)
    cov2 = (z2.T @ z2) / (n - 1)
    cov_loss = _off_diagonal(cov1).pow(2).sum() / d + _off_diagonal(cov2).pow(2).sum() / d

    loss = sim_coeff * repr_loss + std_coeff * std_loss + cov_coeff * cov_loss
    if return_parts:
        return loss, {"repr": repr_loss, "std": std_loss, "cov": cov_loss}
    return loss


def byol_loss(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """BYOL's regression loss (Grill et al. 2020, Eq. 2), one direction, mean over the batch.

        L(p, z) = 1/N sum_n || p_n/|p_n| - z_n/|z_n| ||^2 = 1/N sum_n (2 - 2 cos(p_n, z_n))

    with p = q_theta(z_theta) the online prediction and z = z'_xi the target projection of
    the other view. The stop-gradient on z is the caller's (the target network runs under
    ``torch.no_grad``); BYOL's symmetric loss is ``byol_loss(p1, z2) + byol_loss(p2, z1)``.

    Args:
        p: (N, D) online predictions.
        z: (N, D) target projections of the other view.

    Returns:
        Scalar loss in [0, 4].
    """
    _assert_pair(p, z, "byol_loss")
    p = F.normalize(_at_least_fp32(p), dim=1)
    z = F.normalize(_at_least_fp32(z), dim=1)
    return (2 - 2 * (p * z).sum(dim=1)).mean()


def infonce_with_queue(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, temperature: float = 0.2) -> torch.Tensor:
    """MoCo's InfoNCE loss (He et al. 2020, Eq. 1) with the queue as the negatives.

        L_q = -log( exp(q.k+ / tau) / (exp(q.k+ / tau) + sum_{k- in queue} exp(q.k- / tau)) )

    averaged over the N queries: each query q_n has its own key k_n as positive (logit
    index 0, as in the official code) and the K queued keys as negatives. The inputs are
    used as given: the MoCo code L2-normalises q and k before this loss and queues
    normalised keys. Gradients flow into ``q`` only if the caller computed ``k`` without
    them (MoCo's key encoder runs under ``torch.no_grad``); the queue is never
    differentiated through (it is detached here, as in the official code).

    Args:
        q: (N, D) queries.
        k: (N, D) positive keys, row n for query n.
        queue: (K, D) negative keys, one per row (the official code stores its transpose).
        temperature: tau (0.07 in MoCo v1, 0.2 in MoCo v2).

    Returns:
        Scalar loss.
    """
    assert q.ndim == 2 and q.shape == k.shape, \
        f"infonce_with_queue: q and k must both be (N, D), got {tuple(q.shape)} and {tuple(k.shape)}"
    assert queue.ndim == 2 and queue.shape[1] == q.shape[1], \
        f"infonce_with_queue: queue must be (K, {q.shape[1]}), got {tuple(queue.shape)}"
    assert temperature > 0, f"infonce_with_queue: temperature must be > 0, got {temperature}"
    q, k = _at_least_fp32(q), _at_least_fp32(k)
    positive = (q * k).sum(dim=1, keepdim=True)  # (N, 1)
    negatives = q @ _at_least_fp32(queue.detach()).to(q.dtype).T  # (N, K)
    logits = torch.cat([positive, negatives], dim=1) / temperature
    labels = torch.zeros(q.shape[0], dtype=torch.long, device=q.device)
    return F.cross_entropy(logits, labels)
