import math

import pytest
import torch
import torch.nn.functional as F

from custom.pretraining import GlobalInfoNCELoss, all_gather_with_grad


def reference(z_q, z_k, tau):
    """Per-anchor loop over the 2B embeddings (NT-Xent)."""
    z = F.normalize(torch.cat([z_q, z_k]), dim=1)
    n, b = z.shape[0], z_q.shape[0]
    total = 0.0
    for i in range(n):
        pos = (i + b) % n
        denom = sum(math.exp(float(z[i] @ z[j]) / tau) for j in range(n) if j != i)
        total += -math.log(math.exp(float(z[i] @ z[pos]) / tau) / denom)
    return total / n


def test_matches_loop_reference():
    g = torch.Generator().manual_seed(0)
    z_q, z_k = torch.randn(4, 6, generator=g), torch.randn(4, 6, generator=g)
    for tau in (0.1, 0.5):
        loss = GlobalInfoNCELoss(temperature=tau)(z_q, z_k)
        assert loss.ndim == 0
        assert abs(loss.item() - reference(z_q, z_k, tau)) < 1e-4


def test_symmetric_and_scale_invariant():
    g = torch.Generator().manual_seed(1)
    z_q, z_k = torch.randn(5, 8, generator=g), torch.randn(5, 8, generator=g)
    loss = GlobalInfoNCELoss()
    assert torch.allclose(loss(z_q, z_k), loss(z_k, z_q), atol=1e-6)
    assert torch.allclose(loss(z_q, z_k), loss(3.0 * z_q, 0.5 * z_k), atol=1e-5)


def test_matched_pairs_beat_shuffled_pairs():
    g = torch.Generator().manual_seed(2)
    z_q = torch.randn(8, 16, generator=g)
    z_k = z_q + 0.1 * torch.randn(8, 16, generator=g)
    loss = GlobalInfoNCELoss()
    assert loss(z_q, z_k) < loss(z_q, z_k.roll(1, dims=0))


def test_gradients_and_errors():
    z_q = torch.randn(3, 4, requires_grad=True)
    z_k = torch.randn(3, 4, requires_grad=True)
    GlobalInfoNCELoss()(z_q, z_k).backward()
    assert z_q.grad.abs().sum() > 0 and z_k.grad.abs().sum() > 0
    with pytest.raises(ValueError):
        GlobalInfoNCELoss()(torch.randn(1, 4), torch.randn(1, 4))
    with pytest.raises(ValueError):
        GlobalInfoNCELoss()(torch.randn(2, 4), torch.randn(3, 4))
    with pytest.raises(ValueError):
        GlobalInfoNCELoss(temperature=0.0)


def test_gather_fn_adds_negatives_from_other_ranks():
    """Two simulated ranks: the mean of the per-rank losses equals the loss of the whole batch."""
    g = torch.Generator().manual_seed(3)
    z_q, z_k = torch.randn(6, 5, generator=g), torch.randn(6, 5, generator=g)
    full = GlobalInfoNCELoss(temperature=0.2)(z_q, z_k)

    per_rank = []
    for rank in (0, 1):
        local = slice(3 * rank, 3 * rank + 3)
        calls = iter([F.normalize(z_q, dim=1), F.normalize(z_k, dim=1)])

        def gather(x, rank=rank, calls=calls):
            everything = next(calls).clone()
            everything[3 * rank : 3 * rank + 3] = x  # the local block keeps its gradient
            return everything

        zq_local = z_q[local].clone().requires_grad_(True)
        loss = GlobalInfoNCELoss(temperature=0.2, gather_fn=gather, rank=rank)(zq_local, z_k[local])
        loss.backward()
        assert zq_local.grad.abs().sum() > 0
        per_rank.append(loss.detach())
    assert torch.allclose(torch.stack(per_rank).mean(), full, atol=1e-5)


def test_all_gather_with_grad_is_identity_without_distributed():
    x = torch.randn(2, 3)
    assert all_gather_with_grad(x) is x
