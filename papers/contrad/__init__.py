"""contrad: ContraD, a contrastive discriminator for GANs (Jeong & Shin, ICLR 2021)."""
