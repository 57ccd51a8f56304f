import pytest
import torch

from custom.finetuning.strong_view import StrongView


def _images(b=4, h=32, w=40):
    g = torch.Generator().manual_seed(0)
    return torch.rand(b, 1, h, w, generator=g)


def test_cutmix_pastes_a_box_of_another_slice_and_mixes_any_tensor_alike():
    torch.manual_seed(1)
    x = _images()
    view = StrongView(intensity_prob=0.0, blur_prob=0.0, cutmix_prob=1.0, cutmix_area=(0.2, 0.2))
    strong, boxes = view(x)
    assert strong.shape == x.shape
    for b in range(x.shape[0]):
        box = boxes.box[b, 0]
        src = int(boxes.source[b])
        assert src != b
        # one axis-aligned rectangle of ~20 % of the slice
        rows, cols = box.any(1).nonzero()[:, 0], box.any(0).nonzero()[:, 0]
        assert box.sum() == len(rows) * len(cols) and box[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1].all()
        assert abs(box.float().mean().item() - 0.2) < 0.05
        torch.testing.assert_close(strong[b, 0][box], x[src, 0][box])
        torch.testing.assert_close(strong[b, 0][~box], x[b, 0][~box])
    # the same paste on logits (B, C, H, W) and on masks (B, H, W)
    logits = torch.randn(4, 3, 32, 40)
    mixed = boxes.mix(logits)
    for b in range(4):
        inside = boxes.box[b, 0]
        torch.testing.assert_close(mixed[b][:, inside], logits[int(boxes.source[b])][:, inside])
        torch.testing.assert_close(mixed[b][:, ~inside], logits[b][:, ~inside])
    torch.testing.assert_close(boxes.mix(logits[:, 0]), mixed[:, 0])


def test_no_cutmix_and_no_intensity_is_identity():
    x = _images()
    strong, boxes = StrongView(intensity_prob=0.0, blur_prob=0.0, cutmix_prob=0.0)(x)
    assert not boxes.box.any()
    torch.testing.assert_close(strong, x)


def test_intensity_and_blur_change_pixels_but_not_their_place():
    torch.manual_seed(2)
    x = torch.zeros(2, 1, 32, 32)
    x[:, :, 8:24, 8:24] = 0.8
    strong, boxes = StrongView(intensity_prob=1.0, noise_std=0.0, blur_prob=1.0, cutmix_prob=0.0)(x)
    assert not torch.equal(strong, x)
    # the bright square stays where it was: its centre is still brighter than the far background
    assert (strong[:, 0, 16, 16] > strong[:, 0, 1, 1] + 0.3).all()
    # blur spreads the edge: pixels just outside the square are no longer exactly the background's value
    assert (strong[:, 0, 7, 16] != strong[:, 0, 1, 1]).all()


def test_keeps_dtype_memory_format_and_follows_the_global_seed():
    x = _images().contiguous(memory_format=torch.channels_last).to(torch.bfloat16)
    torch.manual_seed(3)
    a, boxes_a = StrongView()(x)
    torch.manual_seed(3)
    b, boxes_b = StrongView()(x)
    assert a.dtype == torch.bfloat16 and a.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(a, b) and torch.equal(boxes_a.box, boxes_b.box)


def test_invalid_arguments():
    with pytest.raises(ValueError, match="cutmix_prob"):
        StrongView(cutmix_prob=1.5)
    with pytest.raises(ValueError, match="cutmix_area"):
        StrongView(cutmix_area=(0.5, 0.2))
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        StrongView()(torch.rand(3, 8, 8))


def test_boxes_can_come_from_another_batch_and_carry_its_targets():
    torch.manual_seed(4)
    unlabeled, labeled = _images(b=4), torch.rand(3, 1, 32, 40) + 5.0  # labeled intensities are distinguishable
    view = StrongView(intensity_prob=0.0, blur_prob=0.0, cutmix_prob=1.0, cutmix_area=(0.3, 0.3))
    strong, boxes = view(unlabeled, paste_from=labeled)
    assert ((boxes.source >= 0) & (boxes.source < 3)).all()
    for b in range(4):
        box = boxes.box[b, 0]
        assert box.any()
        torch.testing.assert_close(strong[b, 0][box], labeled[int(boxes.source[b]), 0][box])
        torch.testing.assert_close(strong[b, 0][~box], unlabeled[b, 0][~box])
    truth = torch.randn(3, 4, 32, 40)
    weak = torch.randn(4, 4, 32, 40)
    mixed = boxes.mix(weak, pasted=truth)
    for b in range(4):
        box = boxes.box[b, 0]
        torch.testing.assert_close(mixed[b][:, box], truth[int(boxes.source[b])][:, box])
        torch.testing.assert_close(mixed[b][:, ~box], weak[b][:, ~box])
    with pytest.raises(ValueError, match="paste_from"):
        view(unlabeled, paste_from=torch.rand(2, 1, 16, 16))
