import pytest
import torch

from custom.finetuning.dual_decoder import DualDecoderUNet
from custom.networks.encoder import ENCODER_CHANNELS
from custom.pretraining.network import ContrastivePretrainNet


@pytest.mark.parametrize("feature_level,grid", [(4, 2), (3, 4), (2, 8)])
def test_output_shapes_per_feature_level(feature_level, grid):
    net = ContrastivePretrainNet("resnet18", dense_channels=16, global_channels=8, hidden_channels=32,
                                 feature_level=feature_level)
    assert net.stride == 64 // grid
    dense, global_ = net(torch.rand(2, 1, 64, 64))
    assert dense.shape == (2, 16, grid, grid) and global_.shape == (2, 8)
    dense, global_, features = net(torch.rand(2, 1, 64, 64), return_features=True)
    assert features.shape == (2, ENCODER_CHANNELS["resnet18"][feature_level], grid, grid)
    assert dense.shape == (2, 16, grid, grid) and global_.shape == (2, 8)


def test_defaults_are_the_paper_setting():
    net = ContrastivePretrainNet()
    assert net.backbone == "resnet50" and net.feature_level == 4 and net.stride == 32
    assert net.dense_head.net[0].in_channels == 2048 and net.dense_head.net[-1].out_channels == 128
    assert net.global_head.mlp[0].in_features == 2048 and net.global_head.mlp[-1].out_features == 128


@pytest.mark.parametrize("backbone", ["resnet18", "resnet50"])
def test_encoder_keys_match_the_finetuning_network(backbone):
    pretrain = ContrastivePretrainNet(backbone).state_dict()
    finetune = DualDecoderUNet(backbone).encoder.state_dict()
    encoder = {k.removeprefix("encoder."): v for k, v in pretrain.items() if k.startswith("encoder.")}
    assert set(encoder) == set(finetune)
    assert all(encoder[k].shape == finetune[k].shape for k in finetune)
    assert {k.split(".")[0] for k in pretrain} == {"encoder", "dense_head", "global_head"}


def test_invalid_arguments():
    with pytest.raises(ValueError, match="feature_level"):
        ContrastivePretrainNet("resnet18", feature_level=5)
    with pytest.raises(ValueError, match="backbone"):
        ContrastivePretrainNet("vgg16")


def test_dense_embedding_net_is_the_normalised_dense_head_and_scripts():
    from custom.pretraining.network import DenseEmbeddingNet

    torch.manual_seed(0)
    train_net = ContrastivePretrainNet("resnet18", feature_level=3).eval()
    net = DenseEmbeddingNet("resnet18", feature_level=3).eval()
    net.load_state_dict(train_net.state_dict())  # same keys: the pre-training model.pt loads as it is
    x = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        dense, _ = train_net(x)
        emb = net(x)
        scripted = torch.jit.script(net)(x)
    torch.testing.assert_close(emb, torch.nn.functional.normalize(dense, dim=1))
    torch.testing.assert_close(scripted, emb)
