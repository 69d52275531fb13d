"""The registry of GenCL's VICReg pre-training runs: one name per DVC matrix entry of the `pretrain` stage.

Each run is a cell (or several) of the paper's Tables 1-4 (wave-2 spec 1.A): which generator's precomputed
augmentations it reads (none, noise-based IC-GAN, mask-based MaskGIT), the rate gamma at which a sample's
generated image replaces the input of the generated branch, and the augmentation policy:

- ``vicreg``: VICReg's asymmetric pair; a sample drawn at rate gamma gets view G = t^G(gen(x)), t^G ~ T^G
  (crop, flip, colour jitter, solarisation: no blur, no greyscale), beside view R = t^R(x) with VICReg's full
  view; the others get VICReg's two views (Tables 2-3; gamma 0 is plain VICReg, the shared baseline row "0%").
- ``pairwise``: Table 1's single-family ablation (gamma 1, noise-based): the pair (t^G(gen(x)), t^R(x)) with
  t^G, t^R drawn from the one family ``ops`` (spec 1.C PROPOSE: both branches; the stage's
  ``views.pairwise_branches`` may put it on the generated branch only). No family ("Generative") is the pair
  (gen(x), x); Table 4's mask-based row is the same with MaskGIT's images (by analogy: the paper does not say
  which run gave 67.8).

Row labels are the tables' as printed; Table 4's crop / colour jitter / blur rows are derived from two other
papers (the dagger rows) and are no run.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Generator = Literal["none", "noise", "mask"]
Policy = Literal["vicreg", "pairwise"]
GENERATORS = ("none", "noise", "mask")
TABLES = ("table1", "table2", "table3", "table4")

# T^G: the geometry / colour subset applied after a generated image (Sec. 3, "crop, flip, solarization and colour
# jitter"); blur and greyscale are never in it.
GENERATED_OPS = ("crop", "flip", "jitter", "solarize")


@dataclass(frozen=True)
class Run:
    """One pre-training run: its table cells, generator, rate gamma and augmentation policy."""
    name: str
    rows: tuple[tuple[str, str], ...]  # (table, row label as printed) of every cell the run fills
    generator: Generator
    gamma: float  # probability that a sample's generated branch starts from its generated image
    policy: Policy
    ops: tuple[str, ...] = ()  # pairwise: the single family on the branches (empty: generative only)

    def __post_init__(self):
        if self.generator not in GENERATORS:
            raise ValueError(f"run {self.name}: generator must be one of {GENERATORS}, got {self.generator!r}")
        if not 0.0 <= self.gamma <= 1.0:
            raise ValueError(f"run {self.name}: gamma must lie in [0, 1], got {self.gamma}")
        if (self.generator == "none") != (self.gamma == 0.0):
            raise ValueError(f"run {self.name}: gamma > 0 needs a generator and a generator needs gamma > 0")
        if self.policy == "pairwise" and (self.gamma != 1.0 or len(self.ops) > 1):
            raise ValueError(f"run {self.name}: a pairwise run has gamma 1 and at most one family, got "
                             f"gamma {self.gamma}, ops {self.ops}")
        if self.policy == "vicreg" and self.ops:
            raise ValueError(f"run {self.name}: ops are for pairwise runs only")
        for table, _ in self.rows:
            if table not in TABLES:
                raise ValueError(f"run {self.name}: unknown table {table!r}")

    @property
    def tables(self) -> tuple[str, ...]:
        return tuple(t for t, _ in self.rows)

    def row(self, table: str) -> str:
        """The run's row label in ``table`` as printed."""
        for t, label in self.rows:
            if t == table:
                return label
        raise KeyError(f"run {self.name} fills no row of {table} (it is in {', '.join(self.tables)})")

    def describe(self) -> str:
        """The views in words, for the record."""
        if self.policy == "pairwise":
            family = self.ops[0] if self.ops else "no augmentation"
            return (f"pairwise: ({family} o gen(x), {family} o x), gen = {self.generator}-based, every sample "
                    f"(gamma 1)")
        if self.gamma == 0:
            return "VICReg's two asymmetric views (plain VICReg)"
        return (f"VICReg's two asymmetric views; at rate gamma {self.gamma:g} the generated branch is "
                f"T^G({'+'.join(GENERATED_OPS)}) of the {self.generator}-based image")


def _pct(gamma: float) -> str:
    return f"{round(gamma * 100)}%"


def _gamma_name(gamma: float) -> str:
    return f"g{gamma:g}".replace(".", "p")  # 0.25 -> g0p25, 1 -> g1


# Table 1's families (the pairing's op and its label as printed)
_PAIRS = (("generative", (), "Generative"), ("crop", ("crop",), "Crop + Generative"),
          ("flip", ("flip",), "Flip + Generative"), ("solarize", ("solarize",), "Solarization + Generative"),
          ("jitter", ("jitter",), "Color Jitter + Generative"), ("blur", ("blur",), "Gaussian Blur + Generative"),
          ("grayscale", ("grayscale",), "Greyscale + Generative"))
GAMMAS = (0.25, 0.5, 0.75, 1.0)  # Tables 2-3's rows beside the shared 0%


def _registry() -> dict[str, Run]:
    runs = [Run("baseline", (("table2", "0%"), ("table3", "0%")), "none", 0.0, "vicreg")]
    for key, ops, label in _PAIRS:
        rows = (("table1", label),) + ((("table4", "Noise-Based"),) if key == "generative" else ())
        runs.append(Run(f"pair_{key}", rows, "noise", 1.0, "pairwise", ops))
    for generator, table in (("noise", "table2"), ("mask", "table3")):
        runs += [Run(f"{generator}_{_gamma_name(g)}", ((table, _pct(g)),), generator, g, "vicreg") for g in GAMMAS]
    runs.append(Run("mask_genonly", (("table4", "Mask-Based"),), "mask", 1.0, "pairwise", ()))
    return {r.name: r for r in runs}


RUNS: dict[str, Run] = _registry()
RUN_NAMES: tuple[str, ...] = tuple(RUNS)


def get_run(name: str) -> Run:
    """The run called ``name``; an unknown name is an error listing the known ones."""
    if name not in RUNS:
        raise ValueError(f"unknown GenCL run {name!r}; the runs are {', '.join(RUN_NAMES)}")
    return RUNS[name]


def runs_of(table: str) -> list[Run]:
    """The runs filling rows of ``table``, in registry order."""
    if table not in TABLES:
        raise ValueError(f"unknown table {table!r}; the tables are {', '.join(TABLES)}")
    return [r for r in RUNS.values() if table in r.tables]
