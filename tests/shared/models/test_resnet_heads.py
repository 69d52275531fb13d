"""CIFAR-stem ResNets and projection heads: shapes, stem, memory format, gradients, layer layout."""
import pytest
import torch
from torch import nn

from shared.models import ResNet, mlp_head, resnet18, resnet50, simclr_projector, vicreg_expander


@pytest.mark.parametrize(
    "make, width, feature_dim",
    [(resnet18, 0.25, 128), (resnet18, 1.0, 512), (resnet50, 0.25, 512)],
)
def test_resnet_output_shape_and_feature_dim(make, width, feature_dim):
    torch.manual_seed(0)
    model = make(width=width).eval()
    assert isinstance(model, ResNet)
    assert model.feature_dim == feature_dim
    with torch.no_grad():
        out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, feature_dim)
    assert torch.isfinite(out).all()


def test_resnet_stage_widths_and_in_channels():
    model = resnet50(width=0.1, in_channels=1)
    # round(64 * 0.1) = 6 ... round(512 * 0.1) = 51, times the Bottleneck expansion 4.
    assert model.conv1.in_channels == 1
    assert [model.layer1[0].conv1.out_channels, model.layer4[0].conv1.out_channels] == [6, 51]
    assert model.feature_dim == 51 * 4
    assert [len(model.layer1), len(model.layer2), len(model.layer3), len(model.layer4)] == [3, 4, 6, 3]
    assert resnet18(width=1e-3).feature_dim == 1  # widths never round to 0
    with torch.no_grad():
        assert model.eval()(torch.randn(2, 1, 32, 32)).shape == (2, 204)


@pytest.mark.parametrize("make", [resnet18, resnet50])
def test_cifar_stem_has_no_maxpool(make):
    model = make(width=0.25)
    assert not any(isinstance(m, nn.MaxPool2d) for m in model.modules())
    conv = model.conv1
    assert conv.kernel_size == (3, 3) and conv.stride == (1, 1) and conv.padding == (1, 1)
    assert conv.bias is None
    # Stride 1 stem + three stride-2 stages: 32x32 -> 4x4 before pooling.
    with torch.no_grad():
        x = model.relu(model.bn1(model.conv1(torch.randn(1, 3, 32, 32))))
        assert x.shape[-2:] == (32, 32)
        x = model.layer4(model.layer3(model.layer2(model.layer1(x))))
    assert x.shape[-2:] == (4, 4)


def test_init_is_kaiming_fan_out_and_unit_bn():
    torch.manual_seed(0)
    model = resnet18(width=0.5)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert torch.all(m.weight == 1) and torch.all(m.bias == 0)
    w = model.layer3[0].conv2.weight  # 128 out channels, 3x3: std = sqrt(2 / fan_out)
    expected = (2.0 / (w.shape[0] * 9)) ** 0.5
    assert w.std().item() == pytest.approx(expected, rel=0.05)
    zero = resnet18(width=0.25, zero_init_residual=True)
    assert torch.all(zero.layer1[0].bn2.weight == 0)


def test_channels_last_matches_contiguous():
    torch.manual_seed(0)
    model = resnet18(width=0.25).eval()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        ref = model(x)
        model_cl = model.to(memory_format=torch.channels_last)
        out = model_cl(x.to(memory_format=torch.channels_last))
    assert out.shape == ref.shape
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("make", [resnet18, resnet50])
def test_every_parameter_gets_a_gradient(make):
    torch.manual_seed(0)
    model = make(width=0.125)
    out = model(torch.randn(4, 3, 32, 32))
    (out * torch.randn_like(out)).sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def _layout(seq):
    """(type name, bias present) per Linear, type name for other layers."""
    return [(type(m).__name__, m.bias is not None) if isinstance(m, nn.Linear) else type(m).__name__ for m in seq]


def test_mlp_head_layout():
    head = mlp_head(8, [16, 12], 4, batch_norm=True, last_bn=True)
    assert _layout(head) == [
        ("Linear", True), "BatchNorm1d", "ReLU",
        ("Linear", True), "BatchNorm1d", "ReLU",
        ("Linear", True), "BatchNorm1d",
    ]
    assert [head[0].in_features, head[0].out_features, head[3].out_features, head[6].out_features] == [8, 16, 12, 4]
    plain = mlp_head(8, [], 4, bias=False)
    assert _layout(plain) == [("Linear", False)]
    leaky = mlp_head(8, [16], 4, activation="leaky_relu")
    assert isinstance(leaky[1], nn.LeakyReLU) and leaky[1].negative_slope == 0.1
    assert isinstance(mlp_head(8, [16], 4, activation=nn.GELU)[1], nn.GELU)
    with pytest.raises(ValueError, match="activation"):
        mlp_head(8, [16], 4, activation="swish-ish")
    with pytest.raises(ValueError, match="widths"):
        mlp_head(8, [0], 4)


def test_simclr_projector_is_two_bias_free_linears():
    head = simclr_projector(512, 512, 64)
    assert _layout(head) == [("Linear", False), "ReLU", ("Linear", False)]
    assert (head[0].in_features, head[0].out_features, head[2].out_features) == (512, 512, 64)


def test_vicreg_expander_layout():
    head = vicreg_expander(32, "16-16-8")
    assert _layout(head) == [
        ("Linear", True), "BatchNorm1d", "ReLU",
        ("Linear", True), "BatchNorm1d", "ReLU",
        ("Linear", False),
    ]
    assert head[-1].out_features == 8
    assert _layout(vicreg_expander(32, [8])) == [("Linear", False)]
    with pytest.raises(ValueError, match="dims"):
        vicreg_expander(32, "16-x")


def test_backbone_plus_heads_forward_backward():
    torch.manual_seed(0)
    backbone = resnet18(width=0.125)
    head = vicreg_expander(backbone.feature_dim, "32-32-16")
    z = head(backbone(torch.randn(4, 3, 32, 32)))
    assert z.shape == (4, 16)
    z.pow(2).mean().backward()
    assert all(p.grad is not None for p in list(backbone.parameters()) + list(head.parameters()))


def test_imagenet_stem_is_torchvisions_and_keeps_the_state_dict_keys():
    from torchvision.models import resnet18 as torchvision_resnet18


    ours, theirs = resnet18(stem="imagenet").eval(), torchvision_resnet18().eval()
    theirs.conv1.load_state_dict(ours.conv1.state_dict())
    theirs.bn1.load_state_dict(ours.bn1.state_dict())
    x = torch.rand(2, 3, 64, 64)
    stem = lambda m: m.maxpool(m.relu(m.bn1(m.conv1(x))))  # noqa: E731
    assert stem(ours).shape == (2, 64, 16, 16) and torch.allclose(stem(ours), stem(theirs))
    assert ours.state_dict().keys() == resnet18().state_dict().keys()
    with pytest.raises(ValueError, match="stem"):
        resnet18(stem="tiny")
