"""CIFAR-stem ResNets (torchvision's ImageNet stem on request) that return pooled features.

The layout is torchvision's ResNet v1.5 (stride on the 3x3 conv of a Bottleneck,
attribute names ``conv1``, ``bn1``, ``layer1`` .. ``layer4``) with the stem that
small-image SSL code uses: one 3x3 stride-1 convolution, no max-pool. On 32x32
inputs ``layer4`` therefore sees 4x4 maps instead of 1x1. There is no ``fc``:
``forward`` returns the globally average-pooled features, and heads live in
``shared.models.heads``.

``width`` scales every stage (64, 128, 256, 512 channels at width 1) so tests and
sweeps can use tiny networks with the same topology.
"""
from __future__ import annotations

from typing import Literal, Type

import torch
from torch import nn

__all__ = ["BasicBlock", "Bottleneck", "ResNet", "resnet18", "resnet50"]


def _conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    # No bias: every conv is followed by a BatchNorm, whose shift replaces it.
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


def _conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = _conv3x3(in_planes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _shortcut(in_planes, planes * self.expansion, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = _conv1x1(in_planes, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        # Stride on the 3x3 conv (ResNet v1.5, as torchvision and the VICReg code).
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = _conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _shortcut(in_planes, planes * self.expansion, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


def _shortcut(in_planes: int, out_planes: int, stride: int) -> nn.Sequential | None:
    """Projection shortcut (1x1 conv + BN) only where the shape changes."""
    if stride == 1 and in_planes == out_planes:
        return None
    return nn.Sequential(_conv1x1(in_planes, out_planes, stride), nn.BatchNorm2d(out_planes))


def _scaled(channels: int, width: float) -> int:
    return max(1, round(channels * width))


class ResNet(nn.Module):
    """ResNet trunk with a CIFAR stem (or torchvision's ImageNet stem); ``forward(x) -> (B, feature_dim)``.

    Args:
        block: ``BasicBlock`` or ``Bottleneck``.
        layers: blocks per stage, e.g. ``(2, 2, 2, 2)``.
        width: multiplier on the stage widths 64/128/256/512 (rounded, at least 1).
        in_channels: image channels (3 for CIFAR, 1 for EMNIST/Omniglot).
        zero_init_residual: start the last BN of every block at weight 0 so each
            block begins as the identity (the VICReg code builds its ResNet-50 this
            way); off by default, which is torchvision's default.
        stem: "cifar" (a 3x3/1 conv, no pool: the default) or "imagenet"
            (torchvision's 7x7/2 conv, BN, ReLU, 3x3/2 max-pool).
    """

    def __init__(
        self,
        block: Type[BasicBlock] | Type[Bottleneck],
        layers: tuple[int, int, int, int],
        width: float = 1.0,
        in_channels: int = 3,
        *,
        zero_init_residual: bool = False,
        stem: Literal["cifar", "imagenet"] = "cifar",
    ) -> None:
        super().__init__()
        if not width > 0:
            raise ValueError(f"width must be > 0, got {width!r}")
        if not (isinstance(in_channels, int) and in_channels >= 1):
            raise ValueError(f"in_channels must be a positive int, got {in_channels!r}")
        if len(layers) != 4:
            raise ValueError(f"layers must list 4 stages, got {layers!r}")
        if stem not in ("cifar", "imagenet"):
            raise ValueError(f"stem must be 'cifar' or 'imagenet', got {stem!r}")

        stem_planes = _scaled(64, width)
        # CIFAR stem: a 7x7/2 conv plus max-pool would shrink 32x32 images to 8x8
        # before the first stage, so small-image SSL code uses a 3x3/1 conv only.
        if stem == "cifar":
            self.conv1 = _conv3x3(in_channels, stem_planes, stride=1)
        else:
            self.conv1 = nn.Conv2d(in_channels, stem_planes, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(stem_planes)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1) if stem == "imagenet" else nn.Identity()

        self._in_planes = stem_planes
        self.layer1 = self._make_layer(block, _scaled(64, width), layers[0], stride=1)
        self.layer2 = self._make_layer(block, _scaled(128, width), layers[1], stride=2)
        self.layer3 = self._make_layer(block, _scaled(256, width), layers[2], stride=2)
        self.layer4 = self._make_layer(block, _scaled(512, width), layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.feature_dim: int = _scaled(512, width) * block.expansion
        del self._in_planes

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, Bottleneck):
                    nn.init.zeros_(m.bn3.weight)
                elif isinstance(m, BasicBlock):
                    nn.init.zeros_(m.bn2.weight)

    def _make_layer(self, block, planes: int, blocks: int, stride: int) -> nn.Sequential:
        layers = [block(self._in_planes, planes, stride)]
        self._in_planes = planes * block.expansion
        layers += [block(self._in_planes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4:
            raise ValueError(f"expected images (B, C, H, W), got shape {tuple(x.shape)}")
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        # flatten (not view): a channels_last (B, C, 1, 1) tensor is not view-compatible.
        return torch.flatten(self.avgpool(x), 1)


def resnet18(width: float = 1.0, in_channels: int = 3, *, zero_init_residual: bool = False,
             stem: Literal["cifar", "imagenet"] = "cifar") -> ResNet:
    """ResNet-18 (BasicBlock, 2-2-2-2), CIFAR stem by default; feature_dim = 512 * width."""
    return ResNet(BasicBlock, (2, 2, 2, 2), width, in_channels, zero_init_residual=zero_init_residual, stem=stem)


def resnet50(width: float = 1.0, in_channels: int = 3, *, zero_init_residual: bool = False,
             stem: Literal["cifar", "imagenet"] = "cifar") -> ResNet:
    """ResNet-50 (Bottleneck x4, 3-4-6-3), CIFAR stem by default; feature_dim = 2048 * width."""
    return ResNet(Bottleneck, (3, 4, 6, 3), width, in_channels, zero_init_residual=zero_init_residual, stem=stem)
