"""Test-time views of a slice: every view is mapped back onto the input grid before the outputs are averaged."""

import pytest
import torch
from monai.inferers import SimpleInferer, SliceInferer

from custom.inferers import SliceSymmetryInferer


def ramp_along_first_axis(x: torch.Tensor) -> torch.Tensor:
    """A network that is not equivariant: it adds 0, 1, ..., H-1 along the first in-plane axis."""
    ramp = torch.arange(x.shape[2], dtype=x.dtype).view(1, 1, -1, *([1] * (x.ndim - 3)))
    return x + ramp


@pytest.mark.parametrize("views", ["none", "flips", "dihedral"])
def test_an_equivariant_network_gives_its_own_output(views):
    """Identity is equivariant under every view: any view mapped back wrongly would move the asymmetric image."""
    x = torch.rand(2, 3, 6, 6)
    out = SliceSymmetryInferer(SimpleInferer(), views)(x, lambda t: t.clone())
    torch.testing.assert_close(out, x)


@pytest.mark.parametrize("views", ["flips", "dihedral"])
def test_the_views_average_what_the_network_does_not_share(views):
    """The ramp is reversed by a flip of its axis (and turned onto the other axis by a quarter turn): the mean
    over the views keeps the image and replaces the ramp by its mean, (H-1)/2, everywhere."""
    x = torch.rand(1, 2, 5, 5)
    out = SliceSymmetryInferer(SimpleInferer(), views)(x, ramp_along_first_axis)
    torch.testing.assert_close(out, x + 2.0)
    single = SliceSymmetryInferer(SimpleInferer(), "none")(x, ramp_along_first_axis)
    torch.testing.assert_close(single, ramp_along_first_axis(x))


@pytest.mark.parametrize("views, count", [("none", 1), ("flips", 4), ("dihedral", 8)])
def test_each_view_set_shows_the_network_its_distinct_views(views, count):
    """An image with no symmetry has 8 distinct quarter-turn/flip views: 'flips' must show the identity, both
    flips and the half turn; 'dihedral' all 8, each once."""
    x = torch.arange(16.0).view(1, 1, 4, 4)
    seen = []
    SliceSymmetryInferer(SimpleInferer(), views)(x, lambda t: seen.append(t.clone()) or t)
    assert len(seen) == count and len({tuple(t.flatten().tolist()) for t in seen}) == count
    expected = [x, x.flip(2), x.flip(3), x.flip(2).flip(3)] if views == "flips" else [
        torch.rot90(v, k, dims=(2, 3)) for k in range(4) for v in (x, x.flip(2))][:count]
    assert {tuple(t.flatten().tolist()) for t in seen} == {tuple(t.flatten().tolist()) for t in expected}


def test_the_mean_is_over_the_views_mapped_back():
    """A network that adds a fixed bias map: the result is the image plus the bias averaged over the 8 views of
    the bias, computed here independently (each view of the input sees the bias in place, so the bias comes back
    transformed by the inverse view)."""
    torch.manual_seed(0)
    x, bias = torch.rand(1, 1, 5, 5), torch.rand(1, 1, 5, 5)
    out = SliceSymmetryInferer(SimpleInferer(), "dihedral")(x, lambda t: t + bias)
    inverse_views = [torch.rot90(b, -k, dims=(2, 3)) for k in range(4) for b in (bias, bias.flip(2))]
    torch.testing.assert_close(out, x + torch.stack(inverse_views).mean(0))


def test_volumes_through_a_slice_inferer_are_mapped_back_slice_by_slice():
    volume = torch.rand(1, 1, 8, 8, 3)  # (B, C, H, W, D), slices along D as in the bundle's evaluation
    inferer = SliceSymmetryInferer(SliceInferer(roi_size=(8, 8), spatial_dim=2, sw_batch_size=2), "dihedral")
    out = inferer(volume, ramp_along_first_axis)
    assert out.shape == volume.shape
    torch.testing.assert_close(out, volume + 3.5)


def test_bad_views_are_rejected_with_the_fix():
    with pytest.raises(ValueError, match="views must be one of"):
        SliceSymmetryInferer(SimpleInferer(), "rotations")
    with pytest.raises(ValueError, match="spatial_axes must name the two in-plane axes"):
        SliceSymmetryInferer(SimpleInferer(), "flips", spatial_axes=(2, 2))
    with pytest.raises(TypeError, match="one output tensor per input"):
        SliceSymmetryInferer(SimpleInferer(), "flips")(torch.rand(1, 1, 4, 4), lambda t: (t, t))
    with pytest.raises(ValueError, match="need square slices.*use 'flips'"):
        SliceSymmetryInferer(SimpleInferer(), "dihedral")(torch.rand(1, 1, 4, 6), lambda t: t)
    out = SliceSymmetryInferer(SimpleInferer(), "flips")(torch.rand(1, 1, 4, 6), ramp_along_first_axis)
    assert out.shape == (1, 1, 4, 6)
