"""View sources: everything the SSL trainer calls as ``views(x, index) -> list[Tensor]``.

One protocol (`ViewSource`), four implementations:

- `ClassicViews`: classic augmentation pipelines (`PipelineConfig`: an ordered list of
  named ops, each with its parameters, probability and an on/off switch), the same
  pipeline for every view or one per branch (VICReg/BYOL's asymmetric pair); it can
  also wrap an index-free view generator such as `shared.views.SimCLRViews`.
- `PrecomputedViews`: generated images written once by a DVC stage (one per training
  image, a uint8 ``.npy`` aligned by dataset row), memory-mapped and looked up by
  ``index``, with a per-row fingerprint of the source images checked on every lookup.
- `GeneratorViews`: an online generator called on the batch (a learned augmenter
  ``G(x, z)``, a Langevin sampler ``sample(x)``), without gradient unless asked.
- `GammaMix`: gives each sample, with probability gamma, a generated image instead of
  the original as the input of the chosen branch(es), followed by a classic pipeline
  (GenCL's rate gamma and T^G; the generative prior's extra Langevin view).

The ops themselves are `shared.views`' functions; this package only orders, switches and
routes them. Its modules, each re-exported here:

- `protocol`: `ViewSource`, `GeneratedSource`, `as_float_images` and the index check;
- `pipeline`: the ops (`CropOp` ... `SolarizeOp`), `PipelineConfig`, `vicreg_pipelines`,
  `classic_view`, `ClassicViews`;
- `precomputed`: `row_fingerprints`, `write_precomputed`, `PrecomputedViews`;
- `generated`: the latents, `GeneratorViews`, `GammaMixConfig`, `GammaMix`.
"""
from __future__ import annotations

import numpy as np  # noqa: F401 - kept as an attribute: tests patch `view_sources.np.save`

from shared.view_sources.generated import (Branch, GammaMix, GammaMixConfig, GeneratorViews, Latent, MixedViews,
                                           bank_latent, normal_latent, uniform_latent)
from shared.view_sources.pipeline import (OPS, BlurOp, ClassicViews, CropOp, FlipOp, GrayscaleOp, JitterOp,
                                          PipelineConfig, SolarizeOp, classic_view, vicreg_pipelines)
from shared.view_sources.precomputed import (FINGERPRINT_BITS, FINGERPRINT_COLUMNS, FINGERPRINT_SEED, FORMAT,
                                             PROBE_ROWS, PrecomputedViews, precomputed_files, row_fingerprints,
                                             write_precomputed)
from shared.view_sources.protocol import GeneratedSource, ViewSource, as_float_images

__all__ = ["OPS", "BlurOp", "Branch", "ClassicViews", "CropOp", "FINGERPRINT_BITS", "FINGERPRINT_COLUMNS",
           "FINGERPRINT_SEED", "FORMAT", "FlipOp", "GammaMix", "GammaMixConfig", "GeneratedSource", "GeneratorViews",
           "GrayscaleOp", "JitterOp", "Latent", "MixedViews", "PROBE_ROWS", "PipelineConfig", "PrecomputedViews",
           "SolarizeOp", "ViewSource", "as_float_images", "bank_latent", "classic_view", "normal_latent",
           "precomputed_files", "row_fingerprints", "uniform_latent", "vicreg_pipelines", "write_precomputed"]
