import pytest
import torch

from custom.finetuning.dual_decoder import DecoderOutput, DualDecoderUNet, UNetDecoder
from custom.networks.encoder import ENCODER_CHANNELS, EncoderLoadError, load_encoder_weights


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return DualDecoderUNet("resnet18", out_channels=4).eval()


def test_decoders_differ_by_construction(net):
    up1 = net.decoder1.blocks[0].up
    up2 = net.decoder2.blocks[0].up
    assert isinstance(up1, torch.nn.ConvTranspose2d)
    assert any(isinstance(m, torch.nn.Upsample) and m.mode == "bilinear" for m in up2)
    # different initialisation variances, not only different distributions of the same variance
    w1 = net.decoder1.blocks[1].conv[0].weight
    w2 = net.decoder2.blocks[1].conv[0].weight
    assert w1.shape == w2.shape and w1.std() > 1.5 * w2.std()  # sqrt(2 / (9 * 128)) vs sqrt(2 / (9 * (256 + 128)))


def test_flexibleunet_widths_halve_the_upsampling():
    halved = DualDecoderUNet("resnet50")
    full = DualDecoderUNet("resnet50", halve_upsampling=False)
    assert halved.decoder1.blocks[0].up.out_channels == 1024  # 2048 -> 1024, then the 1024-channel skip
    assert full.decoder1.blocks[0].up.out_channels == 2048
    count = lambda m: sum(p.numel() for p in m.parameters())
    assert count(halved.decoder1) + count(halved.decoder2) < 0.4 * (count(full.decoder1) + count(full.decoder2))
    x = torch.rand(1, 1, 64, 64)
    with torch.no_grad():
        assert all(o.shape == (1, 4, 64, 64) for o in halved(x))


def test_heads_start_with_small_logits():
    torch.manual_seed(0)
    small = DualDecoderUNet("resnet18", head_init="default").eval()
    torch.manual_seed(0)
    relu_gain = DualDecoderUNet("resnet18", head_init="same").eval()
    x = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        assert small(x)[0].std() < relu_gain(x)[0].std()
    with pytest.raises(ValueError, match="init"):
        DualDecoderUNet("resnet18", decoder_inits=("kaiming_normal", "orthogonal"))


def test_decoders_give_different_outputs_at_init(net):
    x = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        logits1, logits2 = net(x)
    assert logits1.shape == logits2.shape == (2, 4, 64, 64)
    assert not torch.allclose(logits1, logits2, atol=1e-3)
    assert (logits1.argmax(1) != logits2.argmax(1)).float().mean() > 0.05


@pytest.mark.parametrize("mode,channels", [("ensemble", 4), ("decoder1", 4), ("decoder2", 4), ("probs", 8)])
def test_output_modes(net, mode, channels):
    x = torch.rand(1, 1, 64, 64)
    with torch.no_grad():
        out = DecoderOutput(net, mode)(x)
        logits1, logits2 = net(x)
    assert out.shape == (1, channels, 64, 64)
    p1, p2 = torch.softmax(logits1, 1), torch.softmax(logits2, 1)
    expected = {"ensemble": (p1 + p2) / 2, "decoder1": p1, "decoder2": p2, "probs": torch.cat([p1, p2], 1)}[mode]
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    assert net.output == "logits"  # the view restores the training mode


def test_input_errors(net):
    with pytest.raises(ValueError, match="input channel"):
        net(torch.rand(1, 3, 64, 64))
    with pytest.raises(ValueError, match="divisible by 32"):
        net(torch.rand(1, 1, 60, 64))
    with pytest.raises(ValueError, match="output"):
        DualDecoderUNet("resnet18", output="nope")


def test_decoder_resolution_resnet50_channels():
    dec = UNetDecoder(ENCODER_CHANNELS["resnet50"], out_channels=8, upsample="bilinear")
    feats = [torch.rand(1, c, 64 // 2**i, 64 // 2**i) for i, c in enumerate(ENCODER_CHANNELS["resnet50"], start=1)]
    assert dec(feats).shape == (1, 8, 64, 64)


def test_encoder_checkpoint_loading(tmp_path, net):
    torch.manual_seed(1)
    source = DualDecoderUNet("resnet18")
    path = tmp_path / "encoder.pt"
    torch.save({f"encoder.{k}": v for k, v in source.encoder.state_dict().items()}, path)
    target = DualDecoderUNet("resnet18")
    before = target.encoder.conv1.weight.clone()
    loaded = load_encoder_weights(target.encoder, path)
    assert len(loaded) == len(source.encoder.state_dict())
    assert not torch.equal(before, target.encoder.conv1.weight)
    for k, v in source.encoder.state_dict().items():
        torch.testing.assert_close(target.encoder.state_dict()[k], v)


def test_encoder_checkpoint_errors(tmp_path):
    target = DualDecoderUNet("resnet18")
    with pytest.raises(EncoderLoadError, match="missing.pt: encoder checkpoint not found"):
        load_encoder_weights(target.encoder, tmp_path / "missing.pt")
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(EncoderLoadError, match="garbage.pt: not a loadable"):
        load_encoder_weights(target.encoder, tmp_path / "garbage.pt")
    torch.save({"something.else": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(EncoderLoadError, match="no encoder weights"):
        load_encoder_weights(target.encoder, tmp_path / "other.pt")
    big = DualDecoderUNet("resnet50")
    torch.save(big.state_dict(), tmp_path / "r50.pt")
    with pytest.raises(EncoderLoadError, match="do not fit"):
        load_encoder_weights(target.encoder, tmp_path / "r50.pt")


def test_resnet18_shortcuts_pass_gradients_and_keep_outputs():
    from monai.networks.nets import ResNetFeatures

    from custom.networks.encoder import ZeroPadShortcut, build_encoder

    torch.manual_seed(0)
    stock = ResNetFeatures("resnet18", pretrained=False, spatial_dims=2, in_channels=1).eval()
    ours = build_encoder("resnet18").eval()
    ours.load_state_dict(stock.state_dict())
    x = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        for a, b in zip(stock(x), ours(x)):
            torch.testing.assert_close(a, b)
    shortcuts = [m.downsample for m in ours.modules() if isinstance(getattr(m, "downsample", None), ZeroPadShortcut)]
    assert len(shortcuts) == 3
    inp = torch.rand(1, 64, 8, 8, requires_grad=True)
    shortcuts[0](inp).sum().backward()
    assert inp.grad is not None and inp.grad.abs().sum() > 0


@pytest.mark.parametrize("spatial_dims,shape", [(1, (2, 4, 8)), (2, (2, 4, 8, 8)), (3, (2, 4, 4, 4, 4))])
def test_zero_pad_shortcut_scripts(spatial_dims, shape):
    from custom.networks.encoder import ZeroPadShortcut

    m = ZeroPadShortcut(8, 2, spatial_dims)
    x = torch.randn(*shape)
    assert torch.equal(torch.jit.script(m)(x), m(x))


def test_resnet18_network_scripts_for_ckpt_export():
    """TorchScript export (MONAI's ckpt_export scripts the network) of the CPU profile's backbone."""
    torch.manual_seed(0)
    net = DualDecoderUNet("resnet18", output="ensemble").eval()
    x = torch.rand(1, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(torch.jit.script(net)(x), net(x), atol=1e-5, rtol=1e-5)
