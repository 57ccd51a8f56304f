import pytest
import torch
from monai.networks.nets import ResNetFeatures

from custom.pretraining.heads import DenseProjectionHead, GlobalProjectionHead


@pytest.mark.parametrize("in_channels", [64, 256, 512, 2048])
def test_dense_head_shape(in_channels):
    head = DenseProjectionHead(in_channels, hidden_channels=32, out_channels=16)
    out = head(torch.randn(2, in_channels, 5, 7))
    assert out.shape == (2, 16, 5, 7)


def test_dense_head_defaults_and_is_pointwise():
    head = DenseProjectionHead(8).eval()
    x = torch.randn(1, 8, 4, 4)
    out = head(x)
    assert out.shape == (1, 128, 4, 4)
    # 1x1 convolutions: each location only depends on its own features
    x2 = x.clone()
    x2[..., 0, 0] += 1.0
    out2 = head(x2)
    assert torch.allclose(out[..., 1:, :], out2[..., 1:, :]) and torch.allclose(out[..., 0, 1:], out2[..., 0, 1:])
    assert not torch.allclose(out[..., 0, 0], out2[..., 0, 0])


def test_dense_head_3d():
    head = DenseProjectionHead(4, 8, 3, spatial_dims=3)
    assert head(torch.randn(2, 4, 3, 4, 5)).shape == (2, 3, 3, 4, 5)


@pytest.mark.parametrize("in_channels", [64, 512, 2048])
def test_global_head_shape(in_channels):
    head = GlobalProjectionHead(in_channels, hidden_channels=32, out_channels=16)
    assert head(torch.randn(3, in_channels, 4, 6)).shape == (3, 16)
    assert GlobalProjectionHead(in_channels)(torch.randn(3, in_channels, 2, 2)).shape == (3, 128)


def test_global_head_pools_then_mlp():
    head = GlobalProjectionHead(6, 10, 4)
    x = torch.randn(2, 6, 3, 5)
    assert torch.allclose(head(x), head(x.mean(dim=(2, 3))), atol=1e-6)


def test_heads_on_resnet_features_and_grad():
    encoder = ResNetFeatures("resnet18", pretrained=False, spatial_dims=2, in_channels=1)
    feats = encoder(torch.randn(2, 1, 64, 64))
    dense = DenseProjectionHead(feats[2].shape[1], 32, 16)
    glob = GlobalProjectionHead(feats[-1].shape[1], 32, 16)
    z_dense, z_glob = dense(feats[2]), glob(feats[-1])
    assert z_dense.shape == (2, 16, 8, 8)
    assert z_glob.shape == (2, 16)
    (z_dense.sum() + z_glob.sum()).backward()
    assert all(p.grad is not None for p in list(dense.parameters()) + list(glob.parameters()))
