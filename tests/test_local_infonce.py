import math

import pytest
import torch
import torch.nn.functional as F

from custom.pretraining.correspondence import indices_to_coords, match_by_feature_argmax, match_grid
from custom.pretraining import LocalInfoNCELoss
from custom.pretraining.local_infonce import local_infonce_naive
from custom.pretraining.local_infonce import _sample_negative_index
from custom.pretraining.views import sample_affine


def random_problem(b=3, d=6, grid_q=(3, 4), grid_k=(4, 3), seed=0, dtype=torch.float32):
    """Random embeddings of two views with a random-geometry correspondence in both directions."""
    g = torch.Generator().manual_seed(seed)
    emb_q = torch.randn(b, d, *grid_q, generator=g, dtype=dtype, requires_grad=True)
    emb_k = torch.randn(b, d, *grid_k, generator=g, dtype=dtype, requires_grad=True)
    kwargs = dict(rotation_range=0.5, scale_range=(0.8, 1.2), translate_range=0.3, flip_prob=0.5, generator=g)
    theta_q, theta_k = sample_affine(b, **kwargs), sample_affine(b, **kwargs)
    coords_k, valid_q = match_grid(theta_q, theta_k, grid_q)
    coords_q, valid_k = match_grid(theta_k, theta_q, grid_k)
    return emb_q, emb_k, coords_k.to(dtype), valid_q, coords_q.to(dtype), valid_k


def loop_direction(anchor, target, index, valid, tau):
    """Per-cell reference of one direction; ``index`` (B, h*w) gives the matched target cell."""
    b = anchor.shape[0]
    a = F.normalize(anchor.flatten(2), dim=1)
    t = F.normalize(target.flatten(2), dim=1)
    losses = []
    for i in range(b):
        for cell in range(a.shape[2]):
            if not valid[i].flatten()[cell]:
                continue
            pos = math.exp(float(a[i, :, cell] @ t[i, :, index[i, cell]]) / tau)
            neg = sum(
                math.exp(float(a[i, :, cell] @ t[j, :, other]) / tau)
                for j in range(b)
                if j != i
                for other in range(t.shape[2])
            )
            losses.append(-math.log(pos / (pos + neg)))
    return sum(losses) / len(losses)


@pytest.mark.parametrize("chunk_size", [1, 5, 4096])
def test_matches_loop_reference(chunk_size):
    g = torch.Generator().manual_seed(0)
    b, d, grid_q, grid_k, tau = 3, 4, (2, 2), (3, 3), 0.2
    emb_q, emb_k = torch.randn(b, d, *grid_q, generator=g), torch.randn(b, d, *grid_k, generator=g)
    index_k = torch.randint(0, 9, (b, 4), generator=g)  # query cell -> key cell
    index_q = torch.randint(0, 4, (b, 9), generator=g)  # key cell -> query cell
    valid_q = torch.rand(b, *grid_q, generator=g) > 0.3
    valid_k = torch.rand(b, *grid_k, generator=g) > 0.3
    coords_k = indices_to_coords(index_k.reshape(b, *grid_q), grid_k)
    coords_q = indices_to_coords(index_q.reshape(b, *grid_k), grid_q)

    forward = loop_direction(emb_q, emb_k, index_k, valid_q, tau)
    backward = loop_direction(emb_k, emb_q, index_q, valid_k, tau)
    one_way = LocalInfoNCELoss(tau, chunk_size=chunk_size, symmetric=False)(emb_q, emb_k, coords_k, valid_q)
    both = LocalInfoNCELoss(tau, chunk_size=chunk_size)(emb_q, emb_k, coords_k, valid_q, coords_q, valid_k)
    assert abs(one_way.item() - forward) < 1e-4
    assert abs(both.item() - (forward + backward) / 2) < 1e-4
    naive = local_infonce_naive(emb_q, emb_k, coords_k, valid_q, coords_q, valid_k, temperature=tau)
    assert abs(naive.item() - (forward + backward) / 2) < 1e-4


@pytest.mark.parametrize(
    "symmetric, num_negatives, chunk_size",
    [(True, None, 2), (True, None, 7), (False, None, 5), (True, 7, 3), (False, 7, 1000), (True, None, 1000)],
)
def test_chunked_equals_naive_values_and_gradients(symmetric, num_negatives, chunk_size):
    emb_q, emb_k, coords_k, valid_q, coords_q, valid_k = random_problem(seed=chunk_size)
    assert 0 < int(valid_q.sum()) < valid_q.numel()
    args = (emb_q, emb_k, coords_k, valid_q, coords_q, valid_k)
    loss_fn = LocalInfoNCELoss(0.1, num_negatives=num_negatives, chunk_size=chunk_size, symmetric=symmetric)
    chunked = loss_fn(*args, generator=torch.Generator().manual_seed(9))
    grads = torch.autograd.grad(chunked, (emb_q, emb_k))
    naive = local_infonce_naive(
        *args, temperature=0.1, num_negatives=num_negatives, symmetric=symmetric,
        generator=torch.Generator().manual_seed(9),
    )
    grads_naive = torch.autograd.grad(naive, (emb_q, emb_k))
    assert torch.allclose(chunked, naive, atol=1e-5)
    for g_chunk, g_naive in zip(grads, grads_naive):
        assert g_chunk.abs().sum() > 0
        assert torch.allclose(g_chunk, g_naive, atol=1e-5)


def test_chunked_equals_naive_float64_tight():
    emb_q, emb_k, coords_k, valid_q, coords_q, valid_k = random_problem(b=4, d=5, seed=3, dtype=torch.float64)
    args = (emb_q, emb_k, coords_k, valid_q, coords_q, valid_k)
    chunked = LocalInfoNCELoss(0.07, chunk_size=3)(*args)
    naive = local_infonce_naive(*args, temperature=0.07)
    g1 = torch.autograd.grad(chunked, (emb_q, emb_k))
    g2 = torch.autograd.grad(naive, (emb_q, emb_k))
    assert torch.allclose(chunked, naive, atol=1e-10, rtol=0)
    assert all(torch.allclose(a, b, atol=1e-10, rtol=0) for a, b in zip(g1, g2))


def test_chunks_keep_no_similarity_matrix_for_backward():
    """Only inputs and per-row log-normalisers are saved for backward, never a (cells x negatives) matrix."""
    b, d, h = 4, 8, 8
    emb_q = torch.randn(b, d, h, h, requires_grad=True)
    emb_k = torch.randn(b, d, h, h, requires_grad=True)
    eye = torch.eye(2, 3).expand(b, 2, 3)
    coords, valid = match_grid(eye, eye, (h, h))

    def largest_saved(fn):
        sizes = []
        with torch.autograd.graph.saved_tensors_hooks(lambda t: sizes.append(t.numel()) or t, lambda t: t):
            fn()
        return max(sizes)

    full_matrix = (b * h * h) ** 2
    assert largest_saved(lambda: local_infonce_naive(emb_q, emb_k, coords, valid, coords, valid)) >= full_matrix
    chunked = LocalInfoNCELoss(chunk_size=16)
    assert largest_saved(lambda: chunked(emb_q, emb_k, coords, valid, coords, valid)) <= b * h * h * d


def test_matched_pairs_beat_shuffled_pairs():
    g = torch.Generator().manual_seed(1)
    emb_q = torch.randn(4, 8, 4, 4, generator=g)
    emb_k = emb_q + 0.1 * torch.randn(4, 8, 4, 4, generator=g)
    eye = torch.eye(2, 3).expand(4, 2, 3)
    coords, valid = match_grid(eye, eye, (4, 4))
    shuffled = coords.flatten(1, 2)[:, torch.randperm(16, generator=g)].reshape(4, 4, 4, 2)
    loss = LocalInfoNCELoss()
    assert loss(emb_q, emb_k, coords, valid, coords, valid) < loss(emb_q, emb_k, shuffled, valid, shuffled, valid)


def test_symmetric_is_mean_of_directions():
    emb_q, emb_k, coords_k, valid_q, coords_q, valid_k = random_problem(seed=4)
    one_way = LocalInfoNCELoss(symmetric=False)
    forward = one_way(emb_q, emb_k, coords_k, valid_q)
    backward = one_way(emb_k, emb_q, coords_q, valid_k)
    both = LocalInfoNCELoss()(emb_q, emb_k, coords_k, valid_q, coords_q, valid_k)
    assert torch.allclose(both, (forward + backward) / 2, atol=1e-6)
    with pytest.raises(ValueError, match="coords_q"):
        LocalInfoNCELoss()(emb_q, emb_k, coords_k, valid_q)


def test_num_negatives_subset_is_deterministic():
    emb_q, emb_k, coords_k, valid_q, coords_q, valid_k = random_problem(seed=5)
    args = (emb_q, emb_k, coords_k, valid_q, coords_q, valid_k)
    loss = LocalInfoNCELoss(num_negatives=5, chunk_size=4)
    a = loss(*args, generator=torch.Generator().manual_seed(0))
    b = loss(*args, generator=torch.Generator().manual_seed(0))
    c = loss(*args, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and not torch.equal(a, c)
    # fewer negatives: a smaller denominator
    assert a < LocalInfoNCELoss()(*args)
    # asking for at least as many negatives as there are is the full loss
    enough = LocalInfoNCELoss(num_negatives=1000)(*args, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(enough, LocalInfoNCELoss()(*args))


def test_negative_subsets_exclude_own_image_without_repeats():
    cells, num_images, k = 6, 4, 10
    index = _sample_negative_index(
        num_images, 0, cells, num_images * cells, k, torch.Generator().manual_seed(0), torch.device("cpu")
    )
    assert index.shape == (num_images, k)
    for image in range(num_images):
        owners = index[image] // cells
        assert (owners != image).all() and len(set(index[image].tolist())) == k
    # with an offset (a rank's first image is global image 8)
    index = _sample_negative_index(2, 8, cells, 12 * cells, 60, None, torch.device("cpu"))
    assert ((index // cells) != torch.tensor([[8], [9]])).all()


def test_no_valid_cells_gives_zero_with_grad():
    emb_q, emb_k, coords_k, valid_q, coords_q, valid_k = random_problem(seed=6)
    none_q, none_k = torch.zeros_like(valid_q), torch.zeros_like(valid_k)
    for fn in (LocalInfoNCELoss(), lambda *a: local_infonce_naive(*a)):
        loss = fn(emb_q, emb_k, coords_k, none_q, coords_q, none_k)
        assert loss.item() == 0.0
        grads = torch.autograd.grad(loss, (emb_q, emb_k))
        assert all(torch.isfinite(g).all() and (g == 0).all() for g in grads)
    # one empty direction: the other direction alone
    one = LocalInfoNCELoss()(emb_q, emb_k, coords_k, valid_q, coords_q, none_k)
    assert torch.allclose(one, LocalInfoNCELoss(symmetric=False)(emb_q, emb_k, coords_k, valid_q))


def test_batch_size_one_raises():
    emb = torch.randn(1, 4, 2, 2)
    coords, valid = match_grid(torch.eye(2, 3)[None], torch.eye(2, 3)[None], (2, 2))
    with pytest.raises(ValueError, match="batch size of 1"):
        LocalInfoNCELoss()(emb, emb, coords, valid, coords, valid)
    with pytest.raises(ValueError, match="batch size of 1"):
        local_infonce_naive(emb, emb, coords, valid, coords, valid)


def test_feature_argmax_mode_runs():
    g = torch.Generator().manual_seed(7)
    feat_q, feat_k = torch.randn(2, 8, 3, 3, generator=g), torch.randn(2, 8, 4, 4, generator=g)
    emb_q, emb_k = torch.randn(2, 5, 3, 3, requires_grad=True), torch.randn(2, 5, 4, 4, requires_grad=True)
    index_k, valid_q = match_by_feature_argmax(feat_q, feat_k)
    index_q, valid_k = match_by_feature_argmax(feat_k, feat_q)
    loss = LocalInfoNCELoss(chunk_size=4)(
        emb_q, emb_k, indices_to_coords(index_k, (4, 4)), valid_q, indices_to_coords(index_q, (3, 3)), valid_k
    )
    loss.backward()
    assert torch.isfinite(loss) and emb_q.grad.abs().sum() > 0 and emb_k.grad.abs().sum() > 0


@pytest.mark.parametrize("num_negatives", [None, 20])
def test_gather_fn_adds_negatives_from_other_ranks(num_negatives):
    """Two simulated ranks of 2 images: with equal valid counts, the mean of the rank losses is the 4-image loss."""
    g = torch.Generator().manual_seed(8)
    b, d, grid = 4, 6, (3, 3)
    emb_q, emb_k = torch.randn(b, d, *grid, generator=g), torch.randn(b, d, *grid, generator=g)
    coords = indices_to_coords(torch.randint(0, 9, (b, *grid), generator=g), grid)
    valid = torch.ones(b, *grid, dtype=torch.bool)

    def simulated_gather(rank):
        # q->k gathers the key maps, k->q the query maps, as (B, h * w, D) normalised embeddings
        calls = iter([F.normalize(e, dim=1).flatten(2).transpose(1, 2) for e in (emb_k, emb_q)])

        def gather(x):
            everything = next(calls).clone()
            everything[2 * rank : 2 * rank + 2] = x  # the local block keeps its gradient
            return everything

        return gather

    per_rank = []
    for rank in (0, 1):
        local = slice(2 * rank, 2 * rank + 2)
        q_local = emb_q[local].clone().requires_grad_(True)
        args = (q_local, emb_k[local], coords[local], valid[local], coords[local], valid[local])
        loss_fn = LocalInfoNCELoss(
            chunk_size=5, num_negatives=num_negatives, gather_fn=simulated_gather(rank), rank=rank
        )
        loss = loss_fn(*args, generator=torch.Generator().manual_seed(0))
        naive = local_infonce_naive(
            *args, num_negatives=num_negatives, gather_fn=simulated_gather(rank), rank=rank,
            generator=torch.Generator().manual_seed(0),
        )
        assert torch.allclose(loss, naive, atol=1e-5)
        loss.backward()
        assert q_local.grad.abs().sum() > 0
        per_rank.append(loss.detach())
    if num_negatives is None:
        full = LocalInfoNCELoss(chunk_size=5)(emb_q, emb_k, coords, valid, coords, valid)
        assert torch.allclose(torch.stack(per_rank).mean(), full, atol=1e-5)


@pytest.mark.parametrize("num_negatives", [None, 7])
def test_explicit_backward_passes_gradcheck(num_negatives):
    """The hand-written backward of the chunked loss against finite differences (float64, chunks of 5 rows)."""
    emb_q, emb_k, coords_k, valid_q, coords_q, valid_k = random_problem(b=3, d=4, dtype=torch.float64, seed=3)
    loss_fn = LocalInfoNCELoss(0.2, num_negatives=num_negatives, chunk_size=5)

    def loss(q, k):
        return loss_fn(q, k, coords_k, valid_q, coords_q, valid_k, generator=torch.Generator().manual_seed(0))

    assert torch.autograd.gradcheck(loss, (emb_q, emb_k))


def test_half_precision_inputs_are_computed_in_float32():
    """bf16 embeddings (e.g. a head run under autocast) give the float32 loss of the rounded values."""
    emb_q, emb_k, coords_k, valid_q, coords_q, valid_k = random_problem(b=4, d=8, seed=4)
    q16 = emb_q.detach().bfloat16().requires_grad_(True)
    k16 = emb_k.detach().bfloat16().requires_grad_(True)
    loss = LocalInfoNCELoss(chunk_size=7)(q16, k16, coords_k, valid_q, coords_q, valid_k)
    reference = local_infonce_naive(q16.float(), k16.float(), coords_k, valid_q, coords_q, valid_k)
    assert torch.allclose(loss.float(), reference, atol=2e-2)
    loss.backward()
    assert q16.grad.dtype == torch.bfloat16 and torch.isfinite(q16.grad.float()).all()
