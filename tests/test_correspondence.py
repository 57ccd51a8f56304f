import pytest
import torch
import torch.nn.functional as F

from custom.correspondence import (
    cell_centers,
    indices_to_coords,
    match_by_feature_argmax,
    match_grid,
    sample_at,
)
from custom.views import sample_affine, warp


def coordinate_image(batch_size: int, size: int) -> torch.Tensor:
    """(B, 2, size, size) "image" whose channels are the normalised (x, y) coordinates of each pixel."""
    return cell_centers((size, size)).permute(2, 0, 1)[None].expand(batch_size, 2, size, size).contiguous()


def test_cell_centers():
    c = cell_centers((2, 4))
    assert c.shape == (2, 4, 2)
    assert torch.allclose(c[0, :, 0], torch.tensor([-0.75, -0.25, 0.25, 0.75]))
    assert torch.allclose(c[:, 0, 1], torch.tensor([-0.5, 0.5]))


def test_identity_views_match_cell_to_cell():
    eye = torch.eye(2, 3).expand(2, 2, 3)
    coords, valid = match_grid(eye, eye, (3, 5))
    assert coords.shape == (2, 3, 5, 2) and valid.shape == (2, 3, 5) and valid.all()
    assert torch.allclose(coords, cell_centers((3, 5)).expand(2, 3, 5, 2), atol=1e-6)
    feats = torch.randn(2, 4, 3, 5)
    assert torch.allclose(sample_at(feats, coords), feats, atol=1e-6)
    assert torch.allclose(sample_at(feats, coords, mode="nearest"), feats)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_correspondence_is_exact(seed):
    size, grid_q, grid_k, batch = 64, 8, 16, 6
    g = torch.Generator().manual_seed(seed)
    kwargs = dict(rotation_range=0.6, scale_range=(0.8, 1.25), translate_range=0.3, flip_prob=0.5, generator=g)
    theta_q, theta_k = sample_affine(batch, **kwargs), sample_affine(batch, **kwargs)
    image = coordinate_image(batch, size)
    # "feature maps" whose channels are the original-image coordinates each cell shows
    feat_q = F.avg_pool2d(warp(image, theta_q, padding_mode="border"), size // grid_q)
    feat_k = F.avg_pool2d(warp(image, theta_k, padding_mode="border"), size // grid_k)

    coords_k, valid = match_grid(theta_q, theta_k, (grid_q, grid_q))
    matched = sample_at(feat_k, coords_k)
    assert valid.float().mean() > 0.3 and not valid.all()
    # half a query cell, in original-image units (the query view zooms by at most 1.25)
    half_cell = (1.0 / grid_q) / 1.25
    err = (matched - feat_q).abs().amax(dim=1)
    assert err[valid].max() < half_cell
    # the query cell's centre, mapped analytically, agrees as well
    centers = torch.cat([cell_centers((grid_q, grid_q)), torch.ones(grid_q, grid_q, 1)], -1)
    original = torch.einsum("bij,hwj->bihw", theta_q, centers)
    assert (matched - original).abs().amax(dim=1)[valid].max() < half_cell


def test_reverse_direction_round_trip():
    g = torch.Generator().manual_seed(0)
    theta_q = sample_affine(3, rotation_range=0.4, scale_range=(0.9, 1.1), translate_range=0.1, generator=g)
    theta_k = sample_affine(3, rotation_range=0.4, scale_range=(0.9, 1.1), translate_range=0.1, generator=g)
    coords_k, _ = match_grid(theta_q, theta_k, (4, 4))
    # map the key coordinates back with the roles swapped: (key view -> original) then (original -> query view)
    hom = torch.cat([coords_k.reshape(3, -1, 2), torch.ones(3, 16, 1)], -1)
    orig = hom @ theta_k.transpose(1, 2)
    q_inv = torch.linalg.inv(torch.cat([theta_q, torch.tensor([[[0.0, 0, 1]]]).expand(3, 1, 3)], 1))[:, :2]
    back = torch.cat([orig, torch.ones(3, 16, 1)], -1) @ q_inv.transpose(1, 2)
    assert torch.allclose(back.reshape(3, 4, 4, 2), cell_centers((4, 4)).expand(3, 4, 4, 2), atol=1e-5)


def test_out_of_view_cells_are_invalid():
    eye = torch.eye(2, 3)[None]
    shifted = torch.tensor([[[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]]])  # key view shows original x in [0, 2]
    centers_x = cell_centers((4, 8))[..., 0]
    # query = original: cells left of the centre are not visible in the key view
    coords, valid = match_grid(eye, shifted, (4, 8))
    assert torch.equal(valid[0], centers_x > 0)
    assert torch.allclose(coords[0][valid[0]][:, 0], centers_x[centers_x > 0] - 1.0)
    # query view shows zero padding for x > 0 (original x > 1): invalid even though the key view is the original
    _, valid = match_grid(shifted, eye, (4, 8))
    assert torch.equal(valid[0], centers_x < 0)
    # a translation beyond the image leaves nothing valid
    far = torch.tensor([[[1.0, 0.0, 2.5], [0.0, 1.0, 0.0]]])
    assert not match_grid(eye, far, (4, 8))[1].any()


def test_sample_at_bilinear_is_manual_interpolation():
    feats = torch.randn(1, 3, 4, 4, dtype=torch.float64)
    # halfway between cells (1, 1) and (1, 2), a quarter of the way to row 2
    x = (-0.25 + 0.25) / 2  # cell centres of a 4-grid are at -0.75, -0.25, 0.25, 0.75
    y = -0.25 + 0.25 * 0.5
    out = sample_at(feats, torch.tensor([[[[x, y]]]], dtype=torch.float64))[0, :, 0, 0]
    top = 0.5 * (feats[0, :, 1, 1] + feats[0, :, 1, 2])
    bottom = 0.5 * (feats[0, :, 2, 1] + feats[0, :, 2, 2])
    assert torch.allclose(out, 0.75 * top + 0.25 * bottom)


def test_match_by_feature_argmax_recovers_permutation():
    g = torch.Generator().manual_seed(0)
    feat_q = torch.randn(2, 16, 3, 4, generator=g, requires_grad=True)
    perm = torch.stack([torch.randperm(12, generator=g) for _ in range(2)])
    feat_k = torch.stack([feat_q[b].detach().flatten(1)[:, perm[b]] for b in range(2)]).reshape(2, 16, 3, 4) * 2.0
    indices, valid = match_by_feature_argmax(feat_q, feat_k)
    assert indices.shape == (2, 3, 4) and valid.all() and not indices.requires_grad
    # query cell i sits at key position inverse_perm[i]
    assert torch.equal(indices.reshape(2, -1), perm.argsort(dim=1))
    coords = indices_to_coords(indices, (3, 4))
    assert torch.allclose(sample_at(feat_k, coords), feat_q.detach() * 2.0, atol=1e-5)


def test_match_grid_rejects_bad_shapes():
    with pytest.raises(ValueError):
        match_grid(torch.eye(2, 3)[None], torch.eye(2, 3).expand(2, 2, 3), (2, 2))
