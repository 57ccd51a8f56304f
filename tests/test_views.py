import math

import pytest
import torch

from custom.pretraining.views import (
    TwoViewAugment,
    rand_contrast,
    rand_gamma,
    rand_gaussian_blur,
    rand_gaussian_noise,
    sample_affine,
    warp,
)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_sample_affine_identity_and_shape():
    theta = sample_affine(5, generator=gen())
    assert theta.shape == (5, 2, 3) and theta.dtype == torch.float32
    assert torch.allclose(theta, torch.eye(2, 3).expand(5, 2, 3))


def test_sample_affine_deterministic():
    kwargs = dict(rotation_range=0.5, scale_range=(0.8, 1.2), translate_range=0.2, flip_prob=0.5)
    a = sample_affine(8, generator=gen(3), **kwargs)
    b = sample_affine(8, generator=gen(3), **kwargs)
    c = sample_affine(8, generator=gen(4), **kwargs)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_sample_affine_ranges():
    theta = sample_affine(
        256, rotation_range=(0.1, 0.3), scale_range=(0.5, 2.0), translate_range=(0.1, 0.3), generator=gen(1)
    ).double()
    lin, t = theta[:, :, :2], theta[:, :, 2]
    assert (t[:, 0].abs() <= 0.1).all() and (t[:, 1].abs() <= 0.3).all() and (t[:, 1].abs() > 0.1).any()
    # |det| = 1 / s^2 with s the zoom factor
    scale = lin.det().abs().rsqrt()
    assert (scale >= 0.5 - 1e-6).all() and (scale <= 2.0 + 1e-6).all()
    angle = torch.atan2(lin[:, 1, 0], lin[:, 0, 0])
    assert (angle >= 0.1 - 1e-6).all() and (angle <= 0.3 + 1e-6).all()


def test_sample_affine_flips():
    theta = sample_affine(64, flip_prob=(1.0, 0.0), generator=gen())
    assert torch.allclose(theta[:, :, :2], torch.tensor([[-1.0, 0.0], [0.0, 1.0]]).expand(64, 2, 2))
    theta = sample_affine(400, flip_prob=0.5, generator=gen())
    fx = (theta[:, 0, 0] < 0).float().mean()
    fy = (theta[:, 1, 1] < 0).float().mean()
    assert 0.35 < fx < 0.65 and 0.35 < fy < 0.65


def test_rotation_is_rigid_in_pixel_space_for_non_square_images():
    h, w = 20, 40
    theta = sample_affine(4, rotation_range=(math.pi / 3, math.pi / 3), spatial_size=(h, w)).double()
    to_pix = torch.diag(torch.tensor([w / 2.0, h / 2.0], dtype=torch.float64))
    lin_pix = to_pix @ theta[:, :, :2] @ torch.linalg.inv(to_pix)
    eye = torch.eye(2, dtype=torch.float64).expand(4, 2, 2)
    assert torch.allclose(lin_pix @ lin_pix.transpose(1, 2), eye, atol=1e-6)


def test_warp_identity_flip_and_shift():
    img = torch.rand(2, 3, 8, 10)
    eye = torch.eye(2, 3).expand(2, 2, 3)
    assert torch.allclose(warp(img, eye), img, atol=1e-6)
    flip = torch.tensor([[-1.0, 0, 0], [0, 1.0, 0]]).expand(2, 2, 3)
    assert torch.allclose(warp(img, flip), img.flip(-1), atol=1e-6)
    # view pixel p samples the input at p + t: t of 2 pixels along x shifts the content left by 2
    shift = torch.tensor([[1.0, 0, 2 * 2 / 10], [0, 1.0, 0]]).expand(2, 2, 3)
    out = warp(img, shift)
    assert torch.allclose(out[..., :-2], img[..., 2:], atol=1e-6)
    assert (out[..., -2:] == 0).all()
    with pytest.raises(ValueError):
        warp(img, eye[:1])


@pytest.mark.parametrize("fn", [rand_gamma, rand_contrast, rand_gaussian_noise, rand_gaussian_blur])
def test_intensity_prob_and_determinism(fn):
    img = torch.rand(4, 1, 16, 16)
    assert torch.allclose(fn(img, prob=0.0, generator=gen()), img)
    a = fn(img, prob=1.0, generator=gen(1))
    b = fn(img, prob=1.0, generator=gen(1))
    assert a.shape == img.shape and torch.equal(a, b)
    assert not torch.allclose(a, img)
    many = torch.rand(32, 1, 8, 8)
    mixed = fn(many, prob=0.5, generator=gen(2))
    changed = sum(not torch.allclose(mixed[i], many[i]) for i in range(32))
    assert 0 < changed < 32


def test_gamma_keeps_range_and_contrast_keeps_mean():
    img = torch.rand(3, 1, 12, 12) * 0.8 + 0.1
    out = rand_gamma(img, prob=1.0, gamma_range=(0.5, 2.0), generator=gen())
    assert torch.allclose(out.amin(dim=(1, 2, 3)), img.amin(dim=(1, 2, 3)), atol=1e-6)
    assert torch.allclose(out.amax(dim=(1, 2, 3)), img.amax(dim=(1, 2, 3)), atol=1e-6)
    out = rand_contrast(img, prob=1.0, factor_range=(0.5, 0.5), generator=gen())
    assert torch.allclose(out.mean(dim=(1, 2, 3)), img.mean(dim=(1, 2, 3)), atol=1e-6)
    assert torch.allclose(out.std(dim=(1, 2, 3)), 0.5 * img.std(dim=(1, 2, 3)), atol=1e-6)


def test_noise_std_and_blur_smooths():
    img = torch.full((2, 1, 64, 64), 0.5)
    noisy = rand_gaussian_noise(img, prob=1.0, std_range=(0.1, 0.1), generator=gen())
    assert abs((noisy - img).std().item() - 0.1) < 0.01
    blurred = rand_gaussian_blur(noisy, prob=1.0, sigma_range=(1.0, 1.0), generator=gen())
    assert blurred.std() < 0.5 * noisy.std()
    assert torch.allclose(rand_gaussian_blur(img, prob=1.0, generator=gen()), img, atol=1e-6)


def test_two_view_augment():
    img = torch.rand(3, 1, 24, 32)
    aug = TwoViewAugment(rotation_range=0.3, scale_range=(0.9, 1.1), translate_range=0.1, flip_prob=0.5)
    view_q, view_k, theta_q, theta_k = aug(img, generator=gen(5))
    assert view_q.shape == view_k.shape == img.shape and theta_q.shape == theta_k.shape == (3, 2, 3)
    assert not torch.allclose(theta_q, theta_k) and not torch.allclose(view_q, view_k)
    again = aug(img, generator=gen(5))
    assert all(torch.equal(x, y) for x, y in zip((view_q, view_k, theta_q, theta_k), again))


def test_two_view_augment_geometry_only_is_warp():
    img = torch.rand(2, 1, 16, 16)
    aug = TwoViewAugment(gamma_prob=0, contrast_prob=0, blur_prob=0, noise_prob=0)
    view_q, view_k, theta_q, theta_k = aug(img, generator=gen())
    assert torch.allclose(view_q, warp(img, theta_q)) and torch.allclose(view_k, warp(img, theta_k))


def test_two_view_augment_non_spatial():
    img = torch.rand(2, 1, 16, 16)
    view_q, view_k, theta_q, theta_k = TwoViewAugment(spatial=False)(img, generator=gen())
    assert torch.equal(theta_q, torch.eye(2, 3).expand(2, 2, 3)) and torch.equal(theta_k, theta_q)
    plain = TwoViewAugment(spatial=False, gamma_prob=0, contrast_prob=0, blur_prob=0, noise_prob=0)
    view_q, view_k, _, _ = plain(img)
    assert torch.equal(view_q, img) and torch.equal(view_k, img)
