"""Projection heads: a generic MLP and the two heads the papers' code uses."""
from __future__ import annotations

from typing import Callable, Sequence

from torch import nn

__all__ = ["mlp_head", "simclr_projector", "vicreg_expander"]

_ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": lambda: nn.ReLU(inplace=True),
    "gelu": nn.GELU,
    "silu": lambda: nn.SiLU(inplace=True),
    "tanh": nn.Tanh,
    # ContraD's projection heads use LeakyReLU with slope 0.1, not PyTorch's 0.01.
    "leaky_relu": lambda: nn.LeakyReLU(0.1, inplace=True),
}


def mlp_head(
    in_dim: int,
    hidden_dims: Sequence[int],
    out_dim: int,
    *,
    bias: bool = True,
    batch_norm: bool = False,
    last_bn: bool = False,
    activation: str | Callable[[], nn.Module] = "relu",
    last_bias: bool | None = None,
) -> nn.Sequential:
    """``Linear[, BN], act`` for each hidden width, then ``Linear[, BN]``.

    Args:
        in_dim: input features.
        hidden_dims: widths of the hidden layers; empty gives a single Linear.
        out_dim: output features.
        bias: bias on the Linear layers (kept even before BN, as the VICReg code does).
        batch_norm: BatchNorm1d after every hidden Linear.
        last_bn: BatchNorm1d after the output Linear.
        activation: ``"relu"``, ``"gelu"``, ``"silu"``, ``"tanh"``,
            ``"leaky_relu"`` (slope 0.1) or a zero-argument callable returning a module.
        last_bias: bias of the output Linear; ``None`` means the same as ``bias``.
    """
    if isinstance(activation, str):
        if activation not in _ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)} or a callable, got {activation!r}")
        make_act = _ACTIVATIONS[activation]
    elif callable(activation):
        make_act = activation
    else:
        raise ValueError(f"activation must be a string or a callable, got {activation!r}")
    dims = [in_dim, *hidden_dims, out_dim]
    for d in dims:
        if isinstance(d, bool) or not isinstance(d, int) or d < 1:
            raise ValueError(f"layer widths must be positive ints, got {dims}")

    layers: list[nn.Module] = []
    for d_in, d_out in zip(dims[:-2], dims[1:-1]):
        layers.append(nn.Linear(d_in, d_out, bias=bias))
        if batch_norm:
            layers.append(nn.BatchNorm1d(d_out))
        layers.append(make_act())
    layers.append(nn.Linear(dims[-2], dims[-1], bias=bias if last_bias is None else last_bias))
    if last_bn:
        layers.append(nn.BatchNorm1d(out_dim))
    return nn.Sequential(*layers)


def simclr_projector(in_dim: int, hidden_dim: int, out_dim: int) -> nn.Sequential:
    """Projector g of the unofficial PyTorch SimCLR (Spijkervet/SimCLR) used by ``gan_simclr``.

    ``Linear(in, hidden, bias=False), ReLU, Linear(hidden, out, bias=False)``; that
    repository's ``simclr/simclr.py`` (commit b844b01) sets ``bias=False`` on both
    Linear layers, with hidden = in = 512 for ResNet-18 and out = 64. The SimCLR
    paper writes it z = W2 relu(W1 h), also without biases.
    """
    return mlp_head(in_dim, [hidden_dim], out_dim, bias=False)


def vicreg_expander(in_dim: int, dims: str | Sequence[int] = "8192-8192-8192") -> nn.Sequential:
    """VICReg's expander h_phi (the official ``Projector``; its ``--mlp`` argument).

    ``Linear + BN + ReLU`` for every width but the last, then ``Linear(bias=False)``
    to the last width (the embedding dimension d of the loss).

    Args:
        in_dim: backbone feature dimension (2048 for ResNet-50).
        dims: widths as ``"8192-8192-8192"`` or a sequence of ints.
    """
    if isinstance(dims, str):
        try:
            widths = [int(s) for s in dims.split("-")]
        except ValueError:
            raise ValueError(f"dims must look like '8192-8192-8192', got {dims!r}") from None
    else:
        widths = list(dims)
    if not widths:
        raise ValueError(f"dims must name at least one width, got {dims!r}")
    return mlp_head(in_dim, widths[:-1], widths[-1], bias=True, batch_norm=True, last_bias=False)
