"""The VQ autoencoder that stands in for MaskGIT's VQGAN tokenizer (spec 1.C / 1.D): image -> token map -> image.

GenCL uses MaskGIT's pre-trained VQGAN (256 x 256 -> 16 x 16 tokens, codebook 1,024). No such weights are offline,
so the suite trains this tokenizer from scratch (`papers.gencl.tokenizer train`); a tokenizer file of the same
format (`save_tokenizer`) trained elsewhere may be given instead at scale paper.

Architecture (van den Oord et al. 2017, "Neural Discrete Representation Learning", Sec. 4.2, generalised to any
number of stages): encoder = per stage a 4x4 stride-2 conv (ReLU between), a 3x3 conv, `res_blocks` residual blocks
(ReLU, 3x3 conv, ReLU, 1x1 conv, added), ReLU, a 1x1 conv to `embed_dim`; decoder mirrored (3x3 conv, residual
blocks, 4x4 stride-2 transposed convs). Downsampling factor f = 2 ** len(channels). Deviation from VQGAN: no
GroupNorm / swish / attention, residual blocks at the token resolution only, and no perceptual, adversarial or
entropy loss (no VGG/LPIPS weights offline; spec 1.D).

Images enter in [0, 1] and are centred (x - 0.5). The decoder's output is not squashed while training (the
reconstruction loss sees the raw output, so a pixel beyond [0, 1] still gets a gradient); the images it returns
(`forward`'s recon, `decode_indices`) are that output clamped to [0, 1].

Quantiser: nearest code in L2, straight-through estimator z_e + sg(z_q - z_e), commitment loss
beta * ||z_e - sg(e)||^2 (mean over elements), and the codebook learned by exponential moving averages (van den Oord
et al. 2017 appendix A.1; Razavi et al. 2019, VQ-VAE-2), not by gradients:

    N_i <- decay N_i + (1 - decay) n_i                  n_i = #vectors assigned to code i in the batch
    m_i <- decay m_i + (1 - decay) sum_{j -> i} z_e(j)
    N~_i = (N_i + eps) / (sum_k N_k + K eps) * sum_k N_k   (Laplace smoothing, as in Sonnet's VQ-VAE EMA: no
                                                         division by zero for an unused code)
    e_i = m_i / N~_i

Dead-code restart (Dhariwal et al. 2020, Jukebox): after the update, each code whose usage N_i is below
`restart_threshold` (vectors per batch) is re-seeded with an encoder output of the current batch drawn uniformly
with the global torch CPU RNG (so a resumed checkpoint draws the same ones), with N_i = restart_threshold and
m_i = e_i * N_i: it counts as just alive and is restarted again while it keeps attracting fewer vectors than the
threshold. The codebook starts as N(0, 1) rows with N_i = 1, so codes no batch uses are re-seeded from data at the
first steps. The EMA runs in training mode only, in float32, on one process (no all-reduce under torchrun).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from shared import checkpoint, config
from shared.device import prepare_batch, to_device

TOKENIZER_FORMAT = "gencl-vq-1"
MAKE_IT = "`dvc repro papers/gencl/dvc.yaml:tokenizer` (python -m papers.gencl.tokenizer train --out <folder>)"


@dataclasses.dataclass
class VQConfig:
    """Architecture and codebook. Defaults: scale paper, MaskGIT's VQGAN where a number has a counterpart (f 16,
    codebook 1,024, embedding 256, 128 base filters with multipliers 1-2-2-4 over the four downsamplings, 2 residual
    blocks, commitment 0.25); decay 0.99 and eps 1e-5 are VQ-VAE's EMA values."""
    channels: tuple[int, ...] = (128, 256, 256, 512)  # width after each stride-2 stage: f = 2 ** len(channels)
    res_blocks: int = 2  # residual blocks at the token resolution, in the encoder and in the decoder
    embed_dim: int = 256  # D, the code vectors' dimension
    codebook_size: int = 1024  # K
    beta: float = 0.25  # commitment weight
    decay: float = 0.99  # EMA decay of the cluster sizes and sums
    eps: float = 1e-5  # Laplace smoothing of the cluster sizes
    restart_threshold: float = 1.0  # a code whose EMA usage N_i falls below this many vectors per batch is re-seeded
    recon_loss: str = "l2"  # "l2" (mean squared error) or "l1" (mean absolute error), on pixels in [0, 1]

    def __post_init__(self):
        self.channels = tuple(int(c) for c in self.channels)
        if not self.channels or any(c < 1 for c in self.channels):
            raise ValueError(f"channels must be one or more positive widths, got {self.channels}")
        for name in ("embed_dim", "codebook_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.res_blocks < 0:
            raise ValueError(f"res_blocks must be >= 0, got {self.res_blocks}")
        if not 0 <= self.decay < 1:
            raise ValueError(f"decay must be in [0, 1), got {self.decay}")
        if not self.eps > 0 or self.beta < 0 or self.restart_threshold < 0:
            raise ValueError(f"need eps > 0, beta >= 0, restart_threshold >= 0; got eps {self.eps}, beta {self.beta}, "
                             f"restart_threshold {self.restart_threshold}")
        if self.recon_loss not in ("l1", "l2"):
            raise ValueError(f"recon_loss must be 'l1' or 'l2', got {self.recon_loss!r}")

    @property
    def factor(self) -> int:
        """f: pixels per token side."""
        return 2 ** len(self.channels)


# ---------------------------------------------------------------- metrics

def perplexity(indices: Tensor, codebook_size: int) -> Tensor:
    """exp(H(p)) of the code frequencies p_k = count_k / N over all of ``indices``: K when every code is used
    equally often, 1 when one code takes everything."""
    counts = torch.bincount(indices.flatten(), minlength=codebook_size).float()
    p = counts / counts.sum()
    return torch.exp(-torch.special.xlogy(p, p).sum())


def codes_used(indices: Tensor) -> int:
    """How many distinct codes ``indices`` holds."""
    return int(indices.unique().numel())


def psnr(x: Tensor, y: Tensor, data_range: float = 1.0) -> Tensor:
    """Per image 10 log10(data_range^2 / MSE) over its pixels, averaged over the batch (dB); images of (B, ...)."""
    assert x.shape == y.shape and x.ndim >= 2, f"psnr needs two (B, ...) batches of one shape, got {x.shape}, {y.shape}"
    mse = (x.float() - y.float()).pow(2).flatten(1).mean(1)
    return (10 * torch.log10(data_range ** 2 / mse)).mean()


# ---------------------------------------------------------------- the quantiser

class EMAQuantizer(nn.Module):
    """Nearest-code quantiser with an EMA codebook and dead-code restart (see the module doc).

    Buffers (in the state dict, no gradients): ``embedding`` e (K, D), ``cluster_size`` N (K,), ``embed_sum`` m (K, D).
    """

    def __init__(self, codebook_size: int, embed_dim: int, decay: float = 0.99, eps: float = 1e-5,
                 restart_threshold: float = 1.0):
        super().__init__()
        self.codebook_size, self.embed_dim = codebook_size, embed_dim
        self.decay, self.eps, self.restart_threshold = decay, eps, restart_threshold
        embedding = torch.randn(codebook_size, embed_dim)
        self.register_buffer("embedding", embedding)
        self.register_buffer("cluster_size", torch.ones(codebook_size))
        self.register_buffer("embed_sum", embedding.clone())

    def nearest(self, z: Tensor) -> Tensor:
        """For rows z (N, D): the index of the nearest code in L2, (N,)."""
        z = z.float()
        e = self.embedding
        dist = z.pow(2).sum(1, keepdim=True) - 2 * z @ e.t() + e.pow(2).sum(1)[None]
        return dist.argmin(1)

    @torch.no_grad()
    def ema_update(self, z: Tensor, idx: Tensor) -> None:
        """One EMA step of N, m and e from rows z (N, D) assigned to codes idx (N,)."""
        z = z.float()
        onehot = F.one_hot(idx, self.codebook_size).to(z.dtype)  # (N, K)
        self.cluster_size.mul_(self.decay).add_(onehot.sum(0), alpha=1 - self.decay)
        self.embed_sum.mul_(self.decay).add_(onehot.t() @ z, alpha=1 - self.decay)
        n = self.cluster_size.sum()
        smoothed = (self.cluster_size + self.eps) / (n + self.codebook_size * self.eps) * n
        self.embedding.copy_(self.embed_sum / smoothed[:, None])

    @torch.no_grad()
    def restart_dead(self, z: Tensor) -> int:
        """Re-seed every code whose usage N_i < restart_threshold with a row of z (N, D), drawn uniformly with
        replacement by the global CPU RNG; returns how many were re-seeded."""
        dead = (self.cluster_size < self.restart_threshold).nonzero().flatten()
        if len(dead) == 0:
            return 0
        rows = torch.randint(0, len(z), (len(dead),)).to(z.device)
        seeds = z.float()[rows]
        self.embedding[dead] = seeds
        self.cluster_size[dead] = self.restart_threshold
        self.embed_sum[dead] = seeds * self.restart_threshold
        return len(dead)

    def forward(self, z_e: Tensor) -> tuple[Tensor, Tensor, Tensor, dict[str, Tensor]]:
        """z_e (B, D, h, w) -> (z_q straight-through (B, D, h, w), indices (B, h, w), commitment ||z_e - sg(e)||^2
        (mean, without beta), stats). In training mode the codebook then takes one EMA step and dead codes are
        re-seeded; z_q uses the codebook from before the step."""
        b, d, h, w = z_e.shape
        assert d == self.embed_dim, f"expected {self.embed_dim} channels, got {d}"
        with torch.autocast(z_e.device.type, enabled=False):  # distances and the EMA in float32
            z = z_e.float().permute(0, 2, 3, 1).reshape(-1, d)
            idx = self.nearest(z)
            z_q = self.embedding[idx]
            commit = F.mse_loss(z, z_q)  # the codebook is a buffer: gradient to the encoder only
            z_st = z + (z_q - z).detach()
            stats = {"perplexity": perplexity(idx, self.codebook_size).detach(),
                     "codes_used": torch.tensor(float(idx.unique().numel())),
                     "restarted": torch.tensor(0.0)}
            if self.training:
                self.ema_update(z.detach(), idx)
                stats["restarted"] = torch.tensor(float(self.restart_dead(z.detach())))
        z_st = z_st.reshape(b, h, w, d).permute(0, 3, 1, 2)
        return z_st, idx.reshape(b, h, w), commit, stats


# ---------------------------------------------------------------- encoder, decoder

class ResBlock(nn.Module):
    """x + conv1x1(ReLU(conv3x3(ReLU(x)))) (VQ-VAE's residual block)."""

    def __init__(self, channels: int):
        super().__init__()
        self.block = nn.Sequential(nn.ReLU(), nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(),
                                   nn.Conv2d(channels, channels, 1))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.block(x)


def build_encoder(cfg: VQConfig) -> nn.Sequential:
    layers: list[nn.Module] = []
    widths = (3, *cfg.channels)
    for i, (c_in, c_out) in enumerate(zip(widths, widths[1:])):
        layers += [nn.Conv2d(c_in, c_out, 4, stride=2, padding=1)] + ([nn.ReLU()] if i < len(cfg.channels) - 1 else [])
    top = cfg.channels[-1]
    layers += [nn.Conv2d(top, top, 3, padding=1), *(ResBlock(top) for _ in range(cfg.res_blocks)), nn.ReLU(),
               nn.Conv2d(top, cfg.embed_dim, 1)]
    return nn.Sequential(*layers)


def build_decoder(cfg: VQConfig) -> nn.Sequential:
    top = cfg.channels[-1]
    layers: list[nn.Module] = [nn.Conv2d(cfg.embed_dim, top, 3, padding=1),
                               *(ResBlock(top) for _ in range(cfg.res_blocks))]
    widths = (*cfg.channels[::-1], 3)
    for c_in, c_out in zip(widths, widths[1:]):
        layers += [nn.ReLU(), nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1)]
    return nn.Sequential(*layers)


class VQAutoencoder(nn.Module):
    """Encoder -> EMA quantiser -> decoder on images in [0, 1]; see the module doc."""

    def __init__(self, cfg: VQConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = build_encoder(cfg)
        self.quantizer = EMAQuantizer(cfg.codebook_size, cfg.embed_dim, cfg.decay, cfg.eps, cfg.restart_threshold)
        self.decoder = build_decoder(cfg)

    @property
    def codebook_size(self) -> int:
        return self.cfg.codebook_size

    def token_grid(self, image_size: int | tuple[int, int]) -> tuple[int, int]:
        """(h, w) of the token map of an image of ``image_size`` (side, or (H, W)) pixels."""
        hw = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        f = self.cfg.factor
        if any(s % f for s in hw):
            raise ValueError(f"image size {hw} is not divisible by the tokenizer's factor f = {f} "
                             f"(2 ** len(channels), channels {self.cfg.channels})")
        return hw[0] // f, hw[1] // f

    def _check(self, x: Tensor) -> None:
        if x.ndim != 4 or x.shape[1] != 3 or not x.is_floating_point():
            raise ValueError(f"expected float images (B, 3, H, W) in [0, 1], got {x.dtype} {tuple(x.shape)}")
        self.token_grid(tuple(x.shape[-2:]))

    def encode(self, x: Tensor) -> Tensor:
        """z_e (B, D, h, w) of images (B, 3, H, W) in [0, 1]."""
        self._check(x)
        return self.encoder(prepare_batch(x - 0.5, x.device))

    def decode_raw(self, z_q: Tensor) -> Tensor:
        """The decoder's unsquashed output for code vectors (B, D, h, w), in the images' [0, 1] frame."""
        return self.decoder(prepare_batch(z_q, z_q.device)) + 0.5

    def forward(self, x: Tensor) -> tuple[Tensor, dict[str, Tensor], dict[str, Tensor]]:
        """x (B, 3, H, W) in [0, 1] -> (reconstruction clamped to [0, 1], loss terms, stats).

        Loss terms (their sum is the training loss): ``recon`` (mean L2 or L1 of the raw output against x, per
        ``recon_loss``) and ``commit`` (beta * mean ||z_e - sg(e)||^2). Stats (detached): ``perplexity`` and
        ``codes_used`` of the batch's tokens, ``restarted`` codes, ``psnr`` of the clamped reconstruction.
        """
        z_q, _, commit, stats = self.quantizer(self.encode(x))
        raw = self.decode_raw(z_q)
        diff = raw.float() - x.float()
        recon = diff.pow(2).mean() if self.cfg.recon_loss == "l2" else diff.abs().mean()
        out = raw.clamp(0, 1)
        stats["psnr"] = psnr(out.detach(), x)
        return out, {"recon": recon, "commit": self.cfg.beta * commit}, stats

    @torch.no_grad()
    def encode_indices(self, x: Tensor) -> Tensor:
        """Token map, int64 (B, h, w), of images (B, 3, H, W) in [0, 1]; the codebook does not move."""
        z = self.encode(x).float()
        b, d, h, w = z.shape
        return self.quantizer.nearest(z.permute(0, 2, 3, 1).reshape(-1, d)).reshape(b, h, w)

    @torch.no_grad()
    def decode_indices(self, idx: Tensor) -> Tensor:
        """Images (B, 3, H, W) in [0, 1] of token maps (B, h, w)."""
        if idx.ndim != 3 or idx.is_floating_point():
            raise ValueError(f"expected integer token maps (B, h, w), got {idx.dtype} {tuple(idx.shape)}")
        if len(idx) and not (0 <= int(idx.min()) and int(idx.max()) < self.codebook_size):
            raise ValueError(f"token ids must lie in [0, {self.codebook_size}), got [{int(idx.min())}, "
                             f"{int(idx.max())}]")
        z_q = self.quantizer.embedding[idx.long()].permute(0, 3, 1, 2)
        return self.decode_raw(z_q).float().clamp(0, 1)


# ---------------------------------------------------------------- the tokenizer file

def save_tokenizer(path: str | Path, model: VQAutoencoder, **meta) -> None:
    """``tokenizer.pt``: the config, the weights and codebook, and ``meta`` (steps, ...), written atomically."""
    checkpoint.save(path, {"format": TOKENIZER_FORMAT, "config": config.to_dict(model.cfg),
                           "state": {k: v.detach().cpu() for k, v in model.state_dict().items()}, "meta": meta})


def load_tokenizer(path: str | Path, device: torch.device | str = "cpu") -> VQAutoencoder:
    """The tokenizer of ``path`` on ``device``, in eval mode, its parameters frozen."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: make it with {MAKE_IT}, or give a tokenizer checkpoint "
                                f"written by papers.gencl.vq.save_tokenizer (a user-supplied one at scale paper)")
    state = checkpoint.load(path)
    if not isinstance(state, dict) or state.get("format") != TOKENIZER_FORMAT:
        raise checkpoint.CheckpointError(f"{path} is not a tokenizer file written by papers.gencl.vq.save_tokenizer "
                                         f"(format {TOKENIZER_FORMAT})")
    cfg = config.build(VQConfig, state["config"], source=str(path), prefix="config.")
    model = VQAutoencoder(cfg)
    try:
        model.load_state_dict(state["state"])
    except RuntimeError as err:
        first = next((line.strip() for line in str(err).splitlines() if line.strip()), "")
        raise checkpoint.CheckpointError(f"{path}: its weights do not fit its config ({first})") from err
    return to_device(model, device).eval().requires_grad_(False)


def n_parameters(model: nn.Module) -> int:
    """Trainable parameters plus the codebook (a buffer, but part of the model's size)."""
    params = sum(p.numel() for p in model.parameters())
    codebook = model.quantizer.embedding.numel() if isinstance(model, VQAutoencoder) else 0
    return params + codebook

