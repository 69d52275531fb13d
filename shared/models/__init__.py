"""Backbones and heads shared by the paper packages."""
from .heads import mlp_head, simclr_projector, vicreg_expander
from .resnet import ResNet, resnet18, resnet50
from .stylegan2 import StyleGAN2Config, stylegan2, stylegan2_cifar

__all__ = ["ResNet", "resnet18", "resnet50", "mlp_head", "simclr_projector", "vicreg_expander",
           "StyleGAN2Config", "stylegan2", "stylegan2_cifar"]
