"""The players of the generator game (Sec. 3.1, Sec. 4.1 "EMNIST-Omniglot"): G_A, G_E / G_L, D_f, D_p.

"The generators G_A, G_E, and G_L were perceptrons with four layers, each with 912 hidden units.
Except for the last layer, G_E shared its layers with G_L." Read here as four linear layers with
three hidden layers of 912 units; the activation is not given (ReLU, spec 2.C). Images are flat
28 x 28 floats in [0, 1] (sigmoid outputs); z ~ U[0, 1]^z_dim, so G_L ends in a sigmoid too.
D_f, D_p: Y -> [0, 1] act on F's features; their architecture is not given (spec 2.C: an MLP
d_F -> 512 -> 512 -> 1 with LeakyReLU 0.2, returning logits for BCE-with-logits).

`save_generators` / `load_generators` write and read `generators.pt` (G_A and G_E / G_L with the
shape that built them); `save_latents` / `load_latents` the Z~ = G_L(X~_f) the retrain stage samples.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import torch
from torch import Tensor, nn

from shared import checkpoint

GENERATORS_KIND = "augmentation_generator/generators"
LATENTS_KIND = "augmentation_generator/latents"


@dataclasses.dataclass(frozen=True)
class GeneratorSpec:
    """The shape of G_A and G_E / G_L: what `generators.pt` must match to be loaded."""
    z_dim: int
    hidden: int = 912
    layers: int = 4  # linear layers of each perceptron, the output layer included
    side: int = 28  # images are 1 x side x side
    channels: int = 1
    # the image outputs add the perceptron's output to the input's logit, sigmoid(logit(x) + net(...)), with the
    # last layer zero-initialised: identity at initialisation (what a U-Net's skips give; not the paper's perceptron)
    skip: bool = False

    def __post_init__(self):
        if self.z_dim < 1 or self.hidden < 1 or self.layers < 2 or self.side < 1 or self.channels < 1:
            raise ValueError(f"generator shape: need z_dim, hidden, side, channels >= 1 and layers >= 2, got {self}")

    @property
    def pixels(self) -> int:
        return self.channels * self.side * self.side

    @classmethod
    def from_game(cls, cfg) -> GeneratorSpec:
        """The spec of a `GameConfig` (28 x 28 one-channel images)."""
        return cls(z_dim=cfg.z_dim, hidden=cfg.hidden, layers=cfg.layers, skip=cfg.skip)


def mlp(dims: list[int], activation: type[nn.Module] = nn.ReLU) -> nn.Sequential:
    """Linear layers dims[0] -> ... -> dims[-1] with `activation` between them, none after the last."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(dims) - 2:
            layers.append(activation())
    return nn.Sequential(*layers)


SKIP_EPS = 0.01  # logit(x) of an input clamped to [SKIP_EPS, 1 - SKIP_EPS]: finite for 0 and 1 pixels


def zero_last(net: nn.Module) -> nn.Module:
    """`net` with the weight and bias of its last Linear layer set to zero (its output starts at 0)."""
    last = [m for m in net.modules() if isinstance(m, nn.Linear)][-1]
    nn.init.zeros_(last.weight)
    nn.init.zeros_(last.bias)
    return net


def image_out(x: Tensor, logits: Tensor, skip: bool) -> Tensor:
    """sigmoid(logits), or with `skip` sigmoid(logit(x) + logits): the image output, shaped as x."""
    logits = logits.view_as(x)
    if skip:
        logits = logits + torch.logit(x.clamp(SKIP_EPS, 1 - SKIP_EPS))
    return torch.sigmoid(logits)


def _check_images(x: Tensor, spec: GeneratorSpec, who: str) -> None:
    want = (spec.channels, spec.side, spec.side)
    if x.ndim != 4 or tuple(x.shape[1:]) != want or not x.is_floating_point():
        raise ValueError(f"{who}: expected float images (N, {', '.join(map(str, want))}), "
                         f"got {x.dtype} {tuple(x.shape)}")


class Augmenter(nn.Module):
    """G_A: X x Z -> X (eq. 5): a perceptron on [flattened x || z] -> a sigmoid image.

    [784 + z_dim] -> 912 -> 912 -> 912 -> 784 with the paper's sizes. With `spec.skip` the output is
    sigmoid(logit(x) + net([x || z])), the last layer zero-initialised: G_A starts as the identity.
    """

    def __init__(self, spec: GeneratorSpec):
        super().__init__()
        self.spec = spec
        self.net = mlp([spec.pixels + spec.z_dim] + [spec.hidden] * (spec.layers - 1) + [spec.pixels])
        if spec.skip:
            zero_last(self.net)

    def forward(self, x: Tensor, z: Tensor) -> Tensor:
        _check_images(x, self.spec, "G_A")
        if z.shape != (x.shape[0], self.spec.z_dim):
            raise ValueError(f"G_A: expected z of shape ({x.shape[0]}, {self.spec.z_dim}), got {tuple(z.shape)}")
        h = torch.cat([x.flatten(1), z.to(x.dtype)], dim=1)
        return image_out(x, self.net(h), self.spec.skip)


class EliminatorPredictor(nn.Module):
    """G_E: X -> X and G_L: X -> Z sharing every layer but the last (Sec. 4.1).

    trunk 784 -> 912 -> 912 -> 912 (ReLU after each), then two heads: `eliminate` 912 -> 784
    (sigmoid image, G_E) and `latent` 912 -> z_dim (sigmoid, G_L, since z ~ U[0, 1]^z_dim).
    `forward(x) -> (G_E(x), G_L(x))` runs the trunk once for both. With `spec.skip`, G_E's image is
    sigmoid(logit(x) + eliminate(h)), `eliminate` zero-initialised: G_E starts as the identity.
    """

    def __init__(self, spec: GeneratorSpec):
        super().__init__()
        self.spec = spec
        self.trunk = nn.Sequential(mlp([spec.pixels] + [spec.hidden] * (spec.layers - 1)), nn.ReLU())
        self.eliminate = nn.Linear(spec.hidden, spec.pixels)
        self.latent = nn.Linear(spec.hidden, spec.z_dim)
        if spec.skip:
            zero_last(self.eliminate)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        _check_images(x, self.spec, "G_E/G_L")
        h = self.trunk(x.flatten(1))
        return image_out(x, self.eliminate(h), self.spec.skip), torch.sigmoid(self.latent(h))


class Critic(nn.Module):
    """D_f or D_p: F's features (N, feature_dim) -> logits (N,); D = sigmoid(logit) is eq. (6)'s [0, 1]."""

    def __init__(self, feature_dim: int, hidden: int = 512, depth: int = 2):
        super().__init__()
        self.net = mlp([feature_dim] + [hidden] * depth + [1], activation=lambda: nn.LeakyReLU(0.2))

    def forward(self, h: Tensor) -> Tensor:
        if h.ndim != 2:
            raise ValueError(f"critic: expected features (N, d), got {tuple(h.shape)}")
        return self.net(h).squeeze(1)


def build_players(cfg, feature_dim: int) -> tuple[dict[str, nn.Module], dict[str, nn.Module]]:
    """({"G_A", "G_EL"}, {"D_f", "D_p"}) for a `GameConfig`, on the CPU (the generator side first)."""
    spec = GeneratorSpec.from_game(cfg)
    generators = {"G_A": Augmenter(spec), "G_EL": EliminatorPredictor(spec)}
    critics = {"D_f": Critic(feature_dim, cfg.critic_hidden), "D_p": Critic(feature_dim, cfg.critic_hidden)}
    return generators, critics


# ---------------------------------------------------------------- generators.pt and latents.pt

def save_generators(path: str | os.PathLike, G_A: Augmenter, G_EL: EliminatorPredictor, **meta) -> None:
    """Write G_A and G_E / G_L with their spec to `path` atomically (`meta`: e.g. the step, the seed)."""
    if G_A.spec != G_EL.spec:
        raise ValueError(f"G_A and G_E/G_L were built with different specs: {G_A.spec} vs {G_EL.spec}")
    checkpoint.save(path, {"kind": GENERATORS_KIND, "spec": dataclasses.asdict(G_A.spec),
                           "G_A": G_A.state_dict(), "G_EL": G_EL.state_dict(), **meta})


def _load_kind(path: Path, kind: str, stage: str) -> dict:
    state = checkpoint.load(path)
    if state is None:
        raise FileNotFoundError(f"{path} does not exist: run the game stage first "
                                f"(python -m papers.augmentation_generator.game ...), which writes {stage}")
    if not isinstance(state, dict) or state.get("kind") != kind:
        found = state.get("kind") if isinstance(state, dict) else type(state).__name__
        raise ValueError(f"{path} is not an augmentation-generator {stage} file (kind {found!r}, expected {kind!r})")
    return state


def load_generators(path: str | os.PathLike, device: str | torch.device = "cpu",
                    expect: GeneratorSpec | None = None) -> tuple[Augmenter, EliminatorPredictor, GeneratorSpec]:
    """(G_A, G_EL, spec) from a `save_generators` file, on `device`, in eval mode.

    A missing file raises FileNotFoundError naming it; a file of another kind, or (with `expect`)
    made with another spec, raises ValueError naming the path and the fields that differ.
    """
    path = Path(path)
    state = _load_kind(path, GENERATORS_KIND, "generators.pt")
    try:
        spec = GeneratorSpec(**state["spec"])
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{path}: unreadable generator spec {state.get('spec')!r} ({err})") from err
    if expect is not None and spec != expect:
        differ = {f.name: (getattr(spec, f.name), getattr(expect, f.name)) for f in dataclasses.fields(spec)
                  if getattr(spec, f.name) != getattr(expect, f.name)}
        raise ValueError(f"{path} was made with another generator config: (file, expected) {differ}; "
                         f"re-run the game stage with this config")
    G_A, G_EL = Augmenter(spec), EliminatorPredictor(spec)
    for name, module in (("G_A", G_A), ("G_EL", G_EL)):
        try:
            module.load_state_dict(state[name])
        except (KeyError, RuntimeError) as err:
            raise ValueError(f"{path}: cannot load {name} ({type(err).__name__}: {str(err).splitlines()[0]})") from err
    return G_A.to(device).eval(), G_EL.to(device).eval(), spec


def save_latents(path: str | os.PathLike, latents: Tensor, **meta) -> None:
    """Write Z~ = G_L(X~_f) (float (N_f, z_dim), row i from fine-tuning image i) to `path` atomically."""
    if latents.ndim != 2:
        raise ValueError(f"latents must be (N_f, z_dim), got {tuple(latents.shape)}")
    latents = latents.detach().float().cpu()
    checkpoint.save(path, {"kind": LATENTS_KIND, "latents": latents, "n": latents.shape[0],
                           "z_dim": latents.shape[1], **meta})


def load_latents(path: str | os.PathLike, z_dim: int | None = None, n: int | None = None) -> Tensor:
    """Z~ (float32 (N_f, z_dim), CPU) from a `save_latents` file; checks `z_dim` and `n` when given."""
    path = Path(path)
    state = _load_kind(path, LATENTS_KIND, "latents.pt")
    latents = state.get("latents")
    if not isinstance(latents, Tensor) or latents.ndim != 2:
        raise ValueError(f"{path}: 'latents' is not an (N_f, z_dim) tensor")
    for name, want, got in (("z_dim", z_dim, latents.shape[1]), ("n", n, latents.shape[0])):
        if want is not None and want != got:
            raise ValueError(f"{path} holds latents with {name} {got}, expected {want}: it was made with another "
                             f"config or data; re-run the game stage")
    return latents
