"""The SSL losses of generative_prior: SimCLR and BYOL with idea #1's Langevin view or idea #2's discriminator view.

Liu & Yan's slides give the ideas and the ablated coefficients, not the losses; the forms here are the wave-2
specification's (``../shared/papers/wave2_specs.md`` 3.C), written on the suite's methods
(:mod:`shared.methods.simclr`, :mod:`shared.methods.byol`) and losses (``nt_xent``, ``byol_loss``).

Embedding size 64 ("embedding size 64"); projector 512 -> 512 -> 64 with BN and ReLU for both methods, BYOL's
predictor 64 -> 512 -> 64 (the spec's PROPOSE: the slides give no head). NT-Xent temperature 0.5 (SimCLR's CIFAR
setting); BYOL's EMA target tau_k = 1 - (1 - tau_base)(cos(pi k / K) + 1) / 2 with K the run's total steps
(:func:`shared.methods.byol.target_ema`, called by the trainer with ``total_steps``; spec risk 9).

Idea #1, the Langevin view (slides: "auxiliary contrastive loss from another view"; spec 3.C). With views
``[v1, v2, vL]``, ``vL`` the SSL augmentation applied to the Langevin image of the same row:

    SimCLR:  L = NT-Xent(z1, z2) + lam * 1/2 [NT-Xent(z1, zL) + NT-Xent(z2, zL)]
    BYOL:    L = BYOL(v1, v2)    + lam * 1/2 [BYOL(v1, vL)    + BYOL(v2, vL)]

each BYOL(a, b) the suite's symmetric form byol_loss(q(z_a), zbar_b) + byol_loss(q(z_b), zbar_a). With
``lam=None`` the method takes two views and is the plain method (the baseline, and the "add_to_dataset" mode,
where the Langevin images are extra rows of the dataset instead: see ``pretrain.py``).

Idea #2, the discriminator view (slides: "treat the output feature map of discriminator as a 'view'"; the BYOL
figures are missing). ``phi_D(v) = D.features(2 v - 1)``: the frozen GAN discriminator's penultimate features
of an augmented view (D reads [-1, 1], views are in [0, 1]), under ``no_grad``, mapped to the 64-d embedding by
a head h_D (:class:`DiscriminatorView`):

    SimCLR:  L = NT-Xent(z1, z2) + coeff * NT-Xent(z1, h_D(phi_D(v2)))
    BYOL:    L = BYOL(v1, v2) + coeff * 1/2 [ l(q(z1), sg(h_D(phi_D(v2)))) + l(q_D(h_D(phi_D(v2))), sg(zbar1)) ]

with l = 2 - 2 cos (``byol_loss``), zbar1 the EMA target's projection of v1 and q_D a predictor of the D
branch. Why this form (spec 3.C and risk 6): for SimCLR the negatives keep a trainable h_D from collapsing.
For BYOL a trainable h_D trained to match the online branch on both sides could collapse to a constant with
it; the form used makes the D branch BYOL-like instead: the online network predicts the D embedding as a
stop-gradient target (like a second target network whose "encoder" is D), and h_D, through its own
predictor q_D, predicts the EMA target's projection of the other view, so h_D only ever chases the slowly
moving EMA target, never a quantity it moves itself. ``DiscUse.head: fixed_random`` replaces h_D by a fixed
random linear projection (no parameters trained): the alternative that cannot collapse at all.

The frozen D (spec risk 7): its parameters have ``requires_grad`` False (so they are left out of
``trainable_parameters()`` and the optimiser), it is kept in eval mode whatever ``train()`` the method gets
(spectral norm's power iteration runs, and changes its ``u`` vectors, only in training mode), and it runs
under ``no_grad``. It is a submodule, so it moves with the method and its (unchanging) state is in the
checkpoint.
"""
from __future__ import annotations

import dataclasses
import math

import torch
from torch import nn

from papers.generative_prior.config import DiscUse, RunSpec
from shared import distributed
from shared.losses import byol_loss, nt_xent
from shared.methods.base import Logs, SSLMethod, check_views, feature_dim as _feature_dim
from shared.methods.byol import BYOL
from shared.models.heads import mlp_head, simclr_projector


@dataclasses.dataclass
class MethodConfig:
    """Heads and loss constants of both methods (the slides give only the embedding size)."""
    embedding_dim: int = 64  # "embedding size 64": the projector's output (and h_D's)
    projector_hidden: int = 512  # projector f -> 512 -> 64 (spec 3.C: 512 -> 512 -> 64)
    projector_batch_norm: bool = True  # SimCLR's projector: BN + ReLU (false: the suite's simclr_projector)
    predictor_hidden: int = 512  # BYOL's q and q_D: 64 -> 512 -> 64
    temperature: float = 0.5  # NT-Xent tau (SimCLR's CIFAR setting)
    base_target_ema: float = 0.996  # BYOL's tau_base
    disc_hidden: int = 512  # h_D: phi_D -> 512 -> 64 (BN, ReLU) when DiscUse.head is "trainable"

    def __post_init__(self):
        for key in ("embedding_dim", "projector_hidden", "predictor_hidden", "disc_hidden"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be >= 1, got {getattr(self, key)}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if not 0 <= self.base_target_ema <= 1:
            raise ValueError(f"base_target_ema must lie in [0, 1], got {self.base_target_ema}")


def frozen(module: nn.Module) -> nn.Module:
    """``module`` in eval mode with no parameter requiring grad."""
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module


class DiscriminatorView(nn.Module):
    """h_D(phi_D(v)): the frozen discriminator's features of views ``v`` in [0, 1], mapped to the embedding.

    ``discriminator`` needs ``features(x)`` on images in [-1, 1] and an int ``feature_dim`` (the suite's
    SNDCGAN / SNResNet discriminators, :mod:`shared.models.sngan`). ``head``: "trainable", an MLP
    ``feature_dim -> hidden -> out`` with BN and ReLU; "fixed_random", a bias-free linear map with
    N(0, 1 / feature_dim) weights that is never trained.
    """

    def __init__(self, discriminator: nn.Module, out_dim: int, hidden_dim: int, head: str = "trainable"):
        super().__init__()
        d = getattr(discriminator, "feature_dim", None)
        if not callable(getattr(discriminator, "features", None)) or not isinstance(d, int) or d < 1:
            raise ValueError(f"the discriminator ({type(discriminator).__name__}) needs a features(x) method and a "
                             f"positive int feature_dim (as shared.models.sngan's discriminators have)")
        self.discriminator = frozen(discriminator)
        if head == "trainable":
            self.head = mlp_head(d, [hidden_dim], out_dim, batch_norm=True)
        elif head == "fixed_random":
            self.head = nn.Linear(d, out_dim, bias=False)
            nn.init.normal_(self.head.weight, 0.0, 1 / math.sqrt(d))
            frozen(self.head)
        else:
            raise ValueError(f"disc.head must be 'trainable' or 'fixed_random', got {head!r}")
        self.head_kind = head

    def train(self, mode: bool = True) -> "DiscriminatorView":
        super().train(mode)
        self.discriminator.eval()  # never training mode: spectral norm would update its u vectors (risk 7)
        return self

    def features(self, v: torch.Tensor) -> torch.Tensor:
        """phi_D(v) = D.features(2 v - 1), without gradient, float32."""
        with torch.no_grad():
            return self.discriminator.features(2 * v - 1).float()

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(v)).float()


def _views_expected(views: list[torch.Tensor], n: int, name: str) -> None:
    check_views(views, name)
    if len(views) != n:
        what = "[v1, v2, vL] (the Langevin view third)" if n == 3 else "[v1, v2]"
        raise ValueError(f"{name}: expects {n} views {what}, got {len(views)}")


class PriorSimCLR(SSLMethod):
    """SimCLR (64-d projection, NT-Xent) plus the Langevin term (``lam``) or the discriminator term (``disc``).

    Args:
        encoder: the backbone, already built.
        cfg: heads and constants.
        lam: lambda of the Langevin view's loss; None: no Langevin view (two views).
        discriminator: the frozen D of idea #2 (needed iff ``disc`` is given).
        disc: coefficient and h_D kind of idea #2; None: no discriminator view.
        feature_dim: the encoder's width; None reads ``encoder.feature_dim``.

    Heads are built in the order projector, h_D, so runs with and without a prior start from the same
    encoder and projector under one seed.
    """

    def __init__(self, encoder: nn.Module, cfg: MethodConfig, *, lam: float | None = None,
                 discriminator: nn.Module | None = None, disc: DiscUse | None = None, feature_dim: int | None = None):
        super().__init__(encoder)
        d = feature_dim or _feature_dim(encoder)
        self.projector = (mlp_head(d, [cfg.projector_hidden], cfg.embedding_dim, batch_norm=True)
                          if cfg.projector_batch_norm else
                          simclr_projector(d, cfg.projector_hidden, cfg.embedding_dim))
        self.temperature = cfg.temperature
        self.lam = lam
        self.disc_coeff, self.disc_view = _disc_view(discriminator, disc, cfg)
        self.n_views = 2 if lam is None else 3

    def forward(self, views: list[torch.Tensor]) -> tuple[torch.Tensor, Logs]:
        _views_expected(views, self.n_views, "PriorSimCLR")
        z = [distributed.gather(self.projector(self.encoder(v)).float()) for v in views]
        main = nt_xent(z[0], z[1], self.temperature)
        loss, logs = main, {"loss_ssl": main.detach()}
        if self.lam is not None:
            aux = 0.5 * (nt_xent(z[0], z[2], self.temperature) + nt_xent(z[1], z[2], self.temperature))
            loss = loss + self.lam * aux
            logs["loss_langevin"] = aux.detach()
        if self.disc_view is not None:
            zd = distributed.gather(self.disc_view(views[1]))
            term = nt_xent(z[0], zd, self.temperature)
            loss = loss + self.disc_coeff * term
            logs["loss_disc"] = term.detach()
        return loss, logs


class PriorBYOL(BYOL):
    """BYOL (the suite's: projector, predictor, EMA target) plus the Langevin term or the discriminator term.

    Same arguments as :class:`PriorSimCLR`. The D branch adds h_D and its predictor q_D (built after
    BYOL's heads and target). ``after_step`` is BYOL's: the EMA of the target encoder and projector.
    """

    def __init__(self, encoder: nn.Module, cfg: MethodConfig, *, lam: float | None = None,
                 discriminator: nn.Module | None = None, disc: DiscUse | None = None, feature_dim: int | None = None):
        super().__init__(encoder, projector_hidden_size=cfg.projector_hidden, projector_output_size=cfg.embedding_dim,
                         predictor_hidden_size=cfg.predictor_hidden, base_target_ema=cfg.base_target_ema,
                         feature_dim=feature_dim)
        self.lam = lam
        self.disc_coeff, self.disc_view = _disc_view(discriminator, disc, cfg)
        self.disc_predictor = (None if self.disc_view is None else
                               mlp_head(cfg.embedding_dim, [cfg.predictor_hidden], cfg.embedding_dim, batch_norm=True))
        self.n_views = 2 if lam is None else 3

    def forward(self, views: list[torch.Tensor]) -> tuple[torch.Tensor, Logs]:
        _views_expected(views, self.n_views, "PriorBYOL")
        p = [self.predictor(self.projector(self.encoder(v))).float() for v in views]  # q(z)
        with torch.no_grad():
            t = [self.target_projector(self.target_encoder(v)).float() for v in views]  # zbar

        def sym(i: int, j: int) -> torch.Tensor:
            return byol_loss(p[i], t[j]) + byol_loss(p[j], t[i])

        main = sym(0, 1)
        loss, logs = main, {"loss_ssl": main.detach()}
        if self.lam is not None:
            aux = 0.5 * (sym(0, 2) + sym(1, 2))
            loss = loss + self.lam * aux
            logs["loss_langevin"] = aux.detach()
        if self.disc_view is not None:
            hd = self.disc_view(views[1])  # h_D(phi_D(v2))
            term = 0.5 * (byol_loss(p[0], hd.detach()) + byol_loss(self.disc_predictor(hd).float(), t[0]))
            loss = loss + self.disc_coeff * term
            logs["loss_disc"] = term.detach()
        return loss, logs


def _disc_view(discriminator: nn.Module | None, disc: DiscUse | None,
               cfg: MethodConfig) -> tuple[float, DiscriminatorView | None]:
    if disc is None:
        if discriminator is not None:
            raise ValueError("a discriminator was given to a run without a discriminator view (its disc is null)")
        return 0.0, None
    if discriminator is None:
        raise ValueError("the run uses the discriminator view (disc) but no discriminator was given")
    return disc.coeff, DiscriminatorView(discriminator, cfg.embedding_dim, cfg.disc_hidden, disc.head)


METHOD_CLASSES: dict[str, type[SSLMethod]] = {"simclr": PriorSimCLR, "byol": PriorBYOL}


def langevin_lam(spec: RunSpec) -> float | None:
    """lambda of the run's auxiliary Langevin loss; None where the method takes two views (no Langevin view,
    or the Langevin images only as extra dataset rows: mode "add_to_dataset")."""
    if spec.langevin is None or spec.langevin.mode == "add_to_dataset":
        return None
    return spec.langevin.lam


def build_method(spec: RunSpec, cfg: MethodConfig, encoder: nn.Module,
                 discriminator: nn.Module | None = None) -> SSLMethod:
    """The run's method around ``encoder`` (heads built here, on the CPU: move it to the device afterwards).

    ``discriminator`` (the frozen D, e.g. from ``discriminator.load_discriminator``) is needed exactly when
    ``spec.disc`` is set.
    """
    if spec.method not in METHOD_CLASSES:
        raise ValueError(f"unknown method {spec.method!r}; allowed: {', '.join(METHOD_CLASSES)}")
    return METHOD_CLASSES[spec.method](encoder, cfg, lam=langevin_lam(spec), discriminator=discriminator,
                                       disc=spec.disc)
