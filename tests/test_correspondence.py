import pytest
import torch
import torch.nn.functional as F

from custom.pretraining.correspondence import (
    cell_centers,
    dense_correspondence,
    indices_to_coords,
    match_by_feature_argmax,
    match_grid,
    sample_at,
)
from custom.pretraining.views import sample_affine, warp


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


def _analytic_key_coords(theta_q: torch.Tensor, theta_k: torch.Tensor, grid: int) -> torch.Tensor:
    """Query cell centre c -> original point theta_q [c; 1] -> key-view point theta_k^-1 [x; 1], by hand."""
    centers = torch.cat([cell_centers((grid, grid)), torch.ones(grid, grid, 1)], -1).double()
    original = torch.einsum("bij,hwj->bhwi", theta_q.double(), centers)
    bottom = torch.tensor([[[0.0, 0.0, 1.0]]], dtype=torch.float64).expand(theta_k.shape[0], 1, 3)
    inv_k = torch.linalg.inv(torch.cat([theta_k.double(), bottom], 1))[:, :2]
    return torch.einsum("bij,bhwj->bhwi", inv_k, torch.cat([original, torch.ones_like(original[..., :1])], -1))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_match_grid_equals_the_analytic_mapping(seed):
    """Rotation, scaling, translation and flips together: the matched key coordinates are the analytic image of the
    query cell centres to 1e-5 (a one-pixel shift at 64 px is 0.031 in normalised units)."""
    g = torch.Generator().manual_seed(seed)
    kwargs = dict(rotation_range=0.6, scale_range=(0.8, 1.25), translate_range=0.3, flip_prob=0.5, generator=g)
    theta_q, theta_k = sample_affine(8, **kwargs), sample_affine(8, **kwargs)
    det = torch.linalg.det(theta_q[:, :, :2])
    assert (det < 0).any() and (det > 0).any(), "the draws should include flipped and unflipped views"
    coords, valid = match_grid(theta_q, theta_k, (8, 8))
    expected = _analytic_key_coords(theta_q, theta_k, 8).float()
    torch.testing.assert_close(coords, expected, atol=1e-5, rtol=0)
    assert torch.equal(valid, (expected.abs() <= 1).all(-1) & valid)  # valid cells lie inside the key view
    one_pixel = torch.tensor([2.0 / 64, 0.0])
    assert ((coords + one_pixel) - expected).abs().amax() > 1e-3  # the tolerance would catch a 1 px shift


def test_match_grid_rotation_scaling_flip_by_hand():
    """A key view rotated by 90 degrees, scaled by 2 and flipped left-right against an identity query view: the
    original point (x, y) appears at key coordinates (-y / 2, -x / 2), worked out by hand."""
    # theta maps view coordinates to original ones: original = R(90) S(2) F_x [u; v] = [[0, -2], [2, 0]] [-u; v]
    theta_k = torch.tensor([[[0.0, -2.0, 0.0], [-2.0, 0.0, 0.0]]])
    theta_q = torch.eye(2, 3)[None]
    coords, valid = match_grid(theta_q, theta_k, (4, 4))
    c = cell_centers((4, 4))
    x, y = c[..., 0], c[..., 1]
    # solve [x; y] = [[0, -2], [-2, 0]] [u; v]  ->  u = -y / 2, v = -x / 2
    torch.testing.assert_close(coords[0], torch.stack([-y / 2, -x / 2], -1), atol=1e-6, rtol=0)
    assert valid.all()


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


def test_geometric_correspondence_of_identical_views():
    theta = torch.eye(2, 3).expand(2, 2, 3)
    coords_k, valid_q, coords_q, valid_k = dense_correspondence("geometric", theta, theta, (4, 4), (4, 4))
    centers = cell_centers((4, 4)).expand(2, 4, 4, 2)
    assert torch.allclose(coords_k, centers, atol=1e-6) and torch.allclose(coords_q, centers, atol=1e-6)
    assert valid_q.all() and valid_k.all()
    with pytest.raises(ValueError, match="features"):
        dense_correspondence("feature_argmax", theta, theta, (4, 4), (4, 4))
