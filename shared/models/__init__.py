"""Backbones and heads shared by the paper packages."""
from .heads import mlp_head, simclr_projector, vicreg_expander
from .resnet import ResNet, resnet18, resnet50

__all__ = ["ResNet", "resnet18", "resnet50", "mlp_head", "simclr_projector", "vicreg_expander"]
