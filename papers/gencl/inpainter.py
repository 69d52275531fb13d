"""GenCL's in-painter: a MaskGIT-style bidirectional masked-token transformer and MaskGIT's decoder.

GenCL (Sec. 3.2) in-paints VQGAN token maps with a pre-trained class-conditional MaskGIT: it keeps the
tokens on the outer edge of the 16 x 16 map, masks the 14 x 14 interior (196 of 256 tokens) and decodes
for 12 iterations, keeping the most confident predictions each time. This module holds

- the model (`InpainterConfig`, `MaskedTokenTransformer`): BERT-like, post-LayerNorm, learned positional
  embedding, a [MASK] token (id ``codebook_size``), an optional class token prepended, logits over the
  codebook only through the tied token embedding (MaskGIT's ``MlmLayer``);
- MaskGIT's training objective (`cosine_schedule`, `training_mask`, `maskgit_loss`);
- GenCL's mask (`border_mask`) and MaskGIT's iterative decoder (`parallel_decode`), batched over images,
  with per-image randomness from a counter-based hash (`counter_uniform`) so an image decodes the same
  whatever batch it is in;
- the weights file (`save_inpainter`, `load_inpainter`).

Semantics follow the official MaskGIT code (google-research/maskgit: ``libml/parallel_decode.py``,
``libml/mask_schedule.py``, ``nets/maskgit_transformer.py``, ``configs/maskgit_class_cond_config.py``);
the docstrings say where the suite differs.
"""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from shared import checkpoint, config

ClassToken = Literal["none", "random", "true_label"]
LAYERNORM_EPS = 1e-12  # BERT's, as in MaskGIT's transformer
INIT_STD = 0.02  # MaskGIT's `initializer_range` (truncated normal at +-2 std)
MIN_MASK_RATIO = 1e-6  # mask_schedule.schedule clips the ratio to [1e-6, 1]


# ---------------------------------------------------------------- model

@dataclasses.dataclass
class InpainterConfig:
    """The masked-token transformer; defaults are MaskGIT's class-conditional ImageNet-256 model
    (``maskgit_class_cond_config.py``: 24 layers, 16 heads, hidden 768, MLP 3072, dropout 0.1, 1,024 codes,
    16 x 16 tokens).

    ``class_token``: "none" (default): unconditional, no labels anywhere (more self-supervised than the
    paper, whose MaskGIT is class-conditional). "true_label": one class token prepended (vocabulary
    codebook + [MASK] + ``num_classes``), trained with each image's label and in-painting each image with
    its own label: USES LABELS (the leak of the paper's pipeline). "random": the same class-conditional
    model (trained with labels: USES LABELS in training) in-painting each image with a uniformly random
    class, so the label of the augmented image is never read (content may drift to another class).
    """
    d_model: int = 768
    layers: int = 24
    heads: int = 16
    mlp: int = 3072
    dropout: float = 0.1  # hidden and attention dropout, as MaskGIT
    codebook_size: int = 1024
    grid: tuple[int, int] = (16, 16)  # token map (h, w)
    class_token: ClassToken = "none"
    num_classes: int = 0  # > 0 exactly when class_token is not "none"

    def __post_init__(self):
        if self.d_model < 1 or self.layers < 1 or self.heads < 1 or self.mlp < 1 or self.d_model % self.heads:
            raise ValueError(f"need d_model, layers, heads, mlp >= 1 and heads dividing d_model, got {self}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.codebook_size < 2 or min(self.grid) < 1:
            raise ValueError(f"need codebook_size >= 2 and a grid of positive sides, got {self.codebook_size}, "
                             f"{self.grid}")
        if (self.class_token == "none") != (self.num_classes == 0) or self.num_classes < 0:
            raise ValueError(f"num_classes must be > 0 with class_token {self.class_token!r} and 0 with 'none', "
                             f"got {self.num_classes}")

    @property
    def tokens(self) -> int:
        return self.grid[0] * self.grid[1]

    @property
    def mask_id(self) -> int:
        return self.codebook_size

    @property
    def uses_labels(self) -> bool:
        return self.class_token != "none"


def _trunc_normal_(t: Tensor) -> None:
    nn.init.trunc_normal_(t, std=INIT_STD, a=-2 * INIT_STD, b=2 * INIT_STD)


class MaskedTokenTransformer(nn.Module):
    """Bidirectional transformer over a token map: ``forward(tokens, classes=None) -> logits``.

    ``tokens``: long (B, h, w) or (B, h*w) in [0, codebook_size], ``codebook_size`` being [MASK];
    ``classes``: long (B,) in [0, num_classes) when the config has a class token (prepended as token
    ``codebook_size + 1 + class``; MaskGIT puts it at ``codebook_size + class`` and [MASK] last: the order
    of ids is immaterial). Returns float logits (B, h*w, codebook_size) for the map's positions only.

    As MaskGIT (BERT): token + learned position embeddings -> LayerNorm -> dropout, post-LN layers with
    GELU MLPs, then Dense -> GELU -> LayerNorm and logits against the (tied) code embeddings plus a bias.
    No attention mask: every position sees every other (bidirectional).
    """

    def __init__(self, cfg: InpainterConfig):
        super().__init__()
        self.cfg = cfg
        self.prefix = 1 if cfg.class_token != "none" else 0
        self.token_embedding = nn.Embedding(cfg.codebook_size + 1 + cfg.num_classes, cfg.d_model)
        self.position_embedding = nn.Parameter(torch.zeros(1, self.prefix + cfg.tokens, cfg.d_model))
        self.embedding_norm = nn.LayerNorm(cfg.d_model, eps=LAYERNORM_EPS)
        self.dropout = nn.Dropout(cfg.dropout)
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(cfg.d_model, cfg.heads, cfg.mlp, cfg.dropout, activation="gelu",
                                       layer_norm_eps=LAYERNORM_EPS, batch_first=True, norm_first=False)
            for _ in range(cfg.layers))
        self.mlm_dense = nn.Linear(cfg.d_model, cfg.d_model)
        self.mlm_norm = nn.LayerNorm(cfg.d_model, eps=LAYERNORM_EPS)
        self.mlm_bias = nn.Parameter(torch.zeros(cfg.codebook_size))
        for name, p in self.named_parameters():
            if p.dim() >= 2:
                _trunc_normal_(p)
            elif name.endswith("bias") or name == "mlm_bias":
                nn.init.zeros_(p)

    def forward(self, tokens: Tensor, classes: Tensor | None = None) -> Tensor:
        cfg = self.cfg
        b = tokens.shape[0]
        ids = tokens.reshape(b, -1)
        if ids.shape[1] != cfg.tokens or ids.dtype != torch.long:
            raise ValueError(f"expected long tokens of {cfg.grid} = {cfg.tokens} per map, got {tokens.dtype} "
                             f"{tuple(tokens.shape)}")
        if self.prefix:
            if classes is None or classes.shape != (b,):
                raise ValueError(f"class_token {cfg.class_token!r} needs one class per map, got "
                                 f"{None if classes is None else tuple(classes.shape)}")
            ids = torch.cat([(cfg.codebook_size + 1 + classes.long()).unsqueeze(1), ids], dim=1)
        elif classes is not None:
            raise ValueError("an unconditional in-painter (class_token 'none') takes no classes")
        h = self.dropout(self.embedding_norm(self.token_embedding(ids) + self.position_embedding))
        for layer in self.layers:
            h = layer(h)
        h = self.mlm_norm(F.gelu(self.mlm_dense(h[:, self.prefix:])))
        return h @ self.token_embedding.weight[:cfg.codebook_size].t() + self.mlm_bias


def save_inpainter(path: str | Path, model: MaskedTokenTransformer, steps: int) -> None:
    """The final weights with their config (atomic), for `load_inpainter`."""
    checkpoint.save(path, {"model": model.state_dict(), "config": config.to_dict(model.cfg), "steps": steps})


def load_inpainter(path: str | Path, device: torch.device | str = "cpu") -> MaskedTokenTransformer:
    """The in-painter saved by `save_inpainter`, in eval mode, frozen, on ``device``."""
    path = Path(path)
    state = checkpoint.load(path, map_location="cpu")
    if state is None:
        raise FileNotFoundError(f"{path} does not exist: it is written by the in-painter training stage "
                                f"(`python -m papers.gencl.inpaint train`, DVC stage `inpainter`)")
    cfg = config.build(InpainterConfig, state["config"], source=str(path))
    model = MaskedTokenTransformer(cfg)
    model.load_state_dict(state["model"])
    return model.to(device).eval().requires_grad_(False)


# ---------------------------------------------------------------- MaskGIT's training objective

def cosine_schedule(r: Tensor | float) -> Tensor | float:
    """MaskGIT's mask schedule gamma(r) = cos(pi r / 2): the fraction of tokens masked at ratio r in [0, 1]
    (1 at r = 0, 0 at r = 1)."""
    if isinstance(r, Tensor):
        return torch.cos(math.pi / 2 * r)
    return math.cos(math.pi / 2 * r)


def training_mask(n: int, grid: tuple[int, int], generator: torch.Generator | None = None) -> Tensor:
    """MaskGIT's training masks: bool (n, h*w), True = masked.

    Per map r ~ U(0, 1), then ceil(gamma(r) * N) of the N = h*w positions (at least 1) chosen uniformly
    without replacement (MaskGIT paper Sec. 3.1). Drawn on the CPU (``generator`` or the global RNG), so
    the masks do not depend on the device. The official class-conditional config also names
    ``min_masking_rate: 0.5``, which its released code never reads: not applied here.
    """
    total = grid[0] * grid[1]
    r = torch.rand(n, generator=generator, dtype=torch.float64)
    counts = torch.ceil(cosine_schedule(r) * total).long().clamp(1, total)
    scores = torch.rand(n, total, generator=generator)
    ranks = scores.argsort(dim=1).argsort(dim=1)  # a uniform random order of the positions per map
    return ranks < counts.unsqueeze(1)


def maskgit_loss(logits: Tensor, targets: Tensor, mask: Tensor, label_smoothing: float = 0.1) -> Tensor:
    """Mean cross-entropy over the masked positions only (MaskGIT, ``compute_loss_for_all: False``).

    ``logits`` (B, N, K), ``targets`` long (B, N), ``mask`` bool (B, N) (True = masked: the loss is taken
    there). With label smoothing eps the target is (1 - eps) one-hot + eps / K uniform, as
    ``F.cross_entropy(label_smoothing=eps)``. Averaged over all masked tokens of the batch.
    """
    assert logits.dim() == 3 and targets.shape == logits.shape[:2] == mask.shape, \
        f"logits {tuple(logits.shape)}, targets {tuple(targets.shape)}, mask {tuple(mask.shape)}"
    if not bool(mask.any()):
        raise ValueError("maskgit_loss: no masked position in the batch")
    return F.cross_entropy(logits[mask].float(), targets[mask], label_smoothing=label_smoothing)


# ---------------------------------------------------------------- GenCL's mask and MaskGIT's decoder

def border_mask(h: int, w: int, border: int = 1) -> Tensor:
    """bool (h, w), True = masked: everything but the outer ``border`` rings (GenCL keeps the edge tokens:
    16 x 16 with border 1 masks the 14 x 14 interior, 196 of 256)."""
    if border < 0 or 2 * border >= min(h, w):
        raise ValueError(f"border {border} leaves no interior in a {h} x {w} map")
    mask = torch.zeros(h, w, dtype=torch.bool)
    mask[border:h - border, border:w - border] = True
    return mask


_M32 = 0xFFFFFFFF
_GOLDEN32 = 0x9E3779B9  # 2^32 / golden ratio


def _mul32(x: Tensor, c: int) -> Tensor:
    """(x * c) mod 2^32 for int64 tensors holding values in [0, 2^32), without int64 overflow."""
    lo, hi = x & 0xFFFF, x >> 16
    return (lo * c + (((hi * (c & 0xFFFF)) & 0xFFFF) << 16)) & _M32


def _hash32(x: Tensor) -> Tensor:
    """A 32-bit avalanche hash (the "lowbias32" xor-shift-multiply finaliser) on values in [0, 2^32)."""
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def counter_uniform(seeds: Tensor, stream: int, n: int) -> Tensor:
    """float32 U(0, 1) draws (B, n) with 24 bits each; entry (i, j) depends only on (seeds[i], stream, j).

    A counter-based hash, not a stateful generator: row i is the same whatever batch it is in. ``seeds``:
    int64 (B,) in [0, 2^32). Never exactly 0 or 1, so logs are finite.
    """
    if seeds.ndim != 1 or seeds.dtype != torch.int64:
        raise ValueError(f"seeds must be a 1-D int64 tensor, got {seeds.dtype} {tuple(seeds.shape)}")
    key = _hash32(_hash32(seeds & _M32) ^ ((stream * _GOLDEN32) & _M32))
    j = torch.arange(n, dtype=torch.int64, device=seeds.device)
    bits = _hash32(_hash32(key[:, None] ^ _hash32((j + 1) * 0x632B & _M32)[None, :]) ^ key[:, None])
    return ((bits >> 8).float() + 0.5) * 2.0 ** -24


def sample_seeds(seed: int, rows: Tensor) -> Tensor:
    """Per-image decoding seeds int64 in [0, 2^32) from a run seed and each image's dataset row."""
    base = _hash32(torch.tensor([seed & _M32], dtype=torch.int64))
    return _hash32(_hash32((rows.long() & _M32).cpu()) ^ base)


def mask_counts(unknown0: Tensor, iterations: int) -> list[Tensor]:
    """How many tokens are still masked after each decoding iteration when nothing else intervenes.

    MaskGIT's rule at iteration t (0-based, ratio = (t + 1) / T, mask_ratio = clip(cos(pi/2 ratio), 1e-6, 1)):
    n = max(1, min(still_masked - 1, floor(unknown0 * mask_ratio))), and never more than still_masked (the
    official threshold on +inf confidences cannot re-mask a known token); after the last iteration 0 (the
    official decoder returns that iteration's samples). ``unknown0``: long (B,).
    """
    still, out = unknown0.clone(), []
    for t in range(iterations):
        if t == iterations - 1:
            still = torch.zeros_like(still)
        else:
            ratio = (t + 1) / iterations
            mask_ratio = min(max(math.cos(math.pi / 2 * ratio), MIN_MASK_RATIO), 1.0)
            n = torch.floor(unknown0.double() * mask_ratio).long()
            still = torch.minimum(torch.clamp(torch.minimum(still - 1, n), min=1), still)
        out.append(still.clone())
    return out


@torch.no_grad()
def parallel_decode(model: nn.Module, tokens: Tensor, mask: Tensor, iterations: int = 12,
                    choice_temperature: float = 4.5, generator: torch.Generator | None = None, *,
                    seeds: Tensor | None = None, classes: Tensor | None = None,
                    return_masks: bool = False) -> Tensor | tuple[Tensor, list[Tensor]]:
    """MaskGIT's iterative decoder (``parallel_decode.decode`` from ``start_iter`` 0), batched over maps.

    ``tokens`` long (B, h, w) or (B, N); ``mask`` bool of the same shape (or (h, w) / (N,), broadcast),
    True = unknown: those positions are replaced by [MASK] and decoded, the others are kept. Per
    iteration t = 0 .. T-1: logits = model(current); a token is sampled at every position from
    Categorical(softmax(logits)) (temperature 1) and kept only where unknown; ratio = (t + 1) / T;
    confidence = log p(sampled) (+inf at known tokens) + choice_temperature * (1 - ratio) * Gumbel; the
    n lowest-confidence positions are masked again, n per map as in `mask_counts` (from the map's own
    initial number of unknowns); the other samples are kept. The last iteration's samples are returned
    whole: no [MASK] is left.

    Randomness: per map from ``seeds`` (int64 (B,) in [0, 2^32); `sample_seeds`) through
    `counter_uniform`, so a map decodes the same whatever else is in the batch (up to floating-point
    differences of batched matmuls); without ``seeds`` they are drawn from ``generator`` (or the global
    CPU RNG). Categorical draws by inverse CDF (one uniform per position, as good as JAX's Gumbel-max
    draw in distribution). The official code masks where confidence < the n-th smallest; here exactly
    the n smallest by rank (the same but for exact ties). ``classes``: (B,) for a class-conditional model.
    ``return_masks``: also the bool (B, N) still-masked maps after every iteration (the last all False).
    The model is put in eval mode for decoding and restored after.
    """
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    b = tokens.shape[0]
    shape = tokens.shape
    flat = tokens.reshape(b, -1).long()
    n_tok = flat.shape[1]
    if mask.numel() == n_tok:  # one mask for every map
        unknown = mask.to(device=flat.device, dtype=torch.bool).reshape(1, n_tok).expand(b, n_tok)
    elif mask.numel() == b * n_tok:
        unknown = mask.to(device=flat.device, dtype=torch.bool).reshape(b, n_tok)
    else:
        raise ValueError(f"mask {tuple(mask.shape)} fits neither one map nor the batch of tokens {tuple(shape)}")
    mask_id = model.cfg.mask_id
    if bool(((flat < 0) | (flat >= mask_id))[~unknown].any()):
        raise ValueError(f"known tokens must be codes in [0, {mask_id})")
    if seeds is None:
        seeds = torch.randint(0, 2 ** 32, (b,), generator=generator, dtype=torch.int64)
    seeds = seeds.to(flat.device)
    if seeds.shape != (b,):
        raise ValueError(f"need one seed per map, got {tuple(seeds.shape)} for {b} maps")

    was_training = model.training
    model.eval()
    current = flat.masked_fill(unknown, mask_id)
    unknown0 = unknown.sum(dim=1)
    masks = []
    for t in range(iterations):
        logits = model(current, classes).float()
        logp = torch.log_softmax(logits, dim=-1)
        cdf = logp.exp().cumsum(dim=-1)  # (B, N, K)
        u = counter_uniform(seeds, 2 * t, n_tok).to(cdf.device)
        draw = torch.searchsorted(cdf, (u * cdf[..., -1]).unsqueeze(-1), right=True).squeeze(-1)
        sampled = torch.where(unknown, draw.clamp(max=logits.shape[-1] - 1), current)
        if t == iterations - 1:
            current, unknown = sampled, torch.zeros_like(unknown)
        else:
            ratio = (t + 1) / iterations
            mask_ratio = min(max(math.cos(math.pi / 2 * ratio), MIN_MASK_RATIO), 1.0)
            still = unknown.sum(dim=1)
            n = torch.floor(unknown0.double() * mask_ratio).long()
            n = torch.minimum(torch.clamp(torch.minimum(still - 1, n), min=1), still)
            confidence = logp.gather(-1, sampled.clamp(max=logits.shape[-1] - 1).unsqueeze(-1)).squeeze(-1)
            confidence = torch.where(unknown, confidence, torch.full_like(confidence, math.inf))
            gumbel = -torch.log(-torch.log(counter_uniform(seeds, 2 * t + 1, n_tok).to(confidence.device)))
            confidence = confidence + choice_temperature * (1.0 - ratio) * gumbel
            ranks = confidence.argsort(dim=1, stable=True).argsort(dim=1)
            unknown = ranks < n.unsqueeze(1)
            current = sampled.masked_fill(unknown, mask_id)
        if return_masks:
            masks.append(unknown.clone())
    model.train(was_training)
    out = current.reshape(shape)
    return (out, masks) if return_masks else out
