"""gan_simclr: real + GAN-fake images in SimCLR pre-training (Halpin-Gregorio)."""
