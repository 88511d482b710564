"""Centre loss, triplet loss and the joint loss."""
import torch
import torch.nn.functional as F

from litefer.losses import CenterLoss, JointLoss, batch_hard_triplet


def test_centre_loss_value_matches_definition():
    loss = CenterLoss(3, 4)
    x = torch.randn(5, 4)
    y = torch.tensor([0, 1, 2, 1, 0])
    expected = 0.5 * ((x - loss.centers[y]) ** 2).sum(1).mean()
    assert torch.allclose(loss(x, y), expected)


def test_centre_loss_pulls_embeddings_and_centres_move():
    torch.manual_seed(0)
    crit = JointLoss(3, 8, softmax=0.0, centre=0.5)
    x = torch.randn(30, 8, requires_grad=True)
    y = torch.arange(30) % 3
    start_centres = crit.center.centers.detach().clone()
    opt_x = torch.optim.SGD([x], lr=20.0)
    opt_c = torch.optim.SGD(crit.center.parameters(), lr=0.5)
    first = None
    for _ in range(50):
        loss, parts = crit(torch.zeros(30, 3), x, y)
        first = first if first is not None else float(parts["centre"].detach())
        opt_x.zero_grad(), opt_c.zero_grad()
        loss.backward()
        crit.center.centers.grad.mul_(crit.centre_grad_scale)
        opt_x.step(), opt_c.step()
    assert float(parts["centre"].detach()) < 0.05 * first                       # embeddings pulled to centres
    assert (crit.center.centers.detach() - start_centres).norm() > 0.1  # centres learned
    # centres end near their class means
    means = torch.stack([x.detach()[y == c].mean(0) for c in range(3)])
    assert (crit.center.centers.detach() - means).norm(dim=1).max() < 0.3
    assert torch.equal(crit.center.nearest_center(means), torch.arange(3))


def test_lambda_zero_is_cross_entropy():
    logits, emb, y = torch.randn(6, 4), torch.randn(6, 16), torch.tensor([0, 1, 2, 3, 0, 1])
    crit = JointLoss(4, 16, softmax=1.0, centre=0.0)
    total, parts = crit(logits, emb, y)
    assert crit.center is None and set(parts) == {"ce"}
    assert torch.allclose(total, F.cross_entropy(logits, y))


def test_joint_loss_is_weighted_sum_and_soft_targets():
    torch.manual_seed(1)
    logits, emb, y = torch.randn(6, 4), torch.randn(6, 16), torch.tensor([0, 1, 2, 3, 0, 1])
    crit = JointLoss(4, 16, softmax=1.0, centre=0.4, triplet=0.2)
    total, parts = crit(logits, emb, y)
    assert torch.allclose(total, parts["ce"] + 0.4 * parts["centre"] + 0.2 * parts["triplet"])
    assert abs(crit.centre_grad_scale - 2.5) < 1e-9
    soft = F.one_hot(y, 4).float()
    total_soft, _ = crit(logits, emb, soft)
    assert torch.allclose(total_soft, total)


def test_batch_hard_triplet():
    # two tight, well separated clusters: no loss; swap labels: positive loss
    emb = torch.tensor([[0.0, 0], [0.1, 0], [5, 5], [5.1, 5]])
    assert float(batch_hard_triplet(emb, torch.tensor([0, 0, 1, 1]), normalize=False)) == 0.0
    assert float(batch_hard_triplet(emb, torch.tensor([0, 1, 0, 1]), normalize=False)) > 1.0
    assert float(batch_hard_triplet(emb, torch.tensor([0, 1, 2, 3]), normalize=False)) == 0.0   # no positives
    # on the unit sphere: directions count, lengths do not
    sphere = torch.tensor([[1.0, 0], [2.0, 0.1], [0, 3.0], [0.1, 0.5]])
    same = torch.tensor([0, 0, 1, 1])
    assert float(batch_hard_triplet(sphere, same)) == 0.0
    assert float(batch_hard_triplet(sphere, torch.tensor([0, 1, 0, 1]))) > 1.0


def test_normalised_triplet_gives_no_reward_for_shrinking_the_embedding():
    """The failure the normalisation removes: shrinking every embedding lowers the raw loss towards the
    margin (what stalled a Table 6 budget run at majority-class accuracy); the normalised loss is
    unchanged by scale, and its gradient does not point towards zero."""
    torch.manual_seed(0)
    emb = torch.randn(32, 16)
    labels = torch.arange(32) % 4
    raw = [float(batch_hard_triplet(emb * s, labels, normalize=False)) for s in (1.0, 0.1, 0.01)]
    assert raw[0] > raw[1] > raw[2] and abs(raw[2] - 0.3) < 0.05
    unit = [float(batch_hard_triplet(emb * s, labels)) for s in (1.0, 0.1, 0.01)]
    assert max(unit) - min(unit) < 1e-4
    x = emb.clone().requires_grad_()
    batch_hard_triplet(x, labels).backward()
    radial = (x.grad * F.normalize(emb, dim=1)).sum(1)
    assert radial.abs().max() < 1e-4          # no component along the embedding: no pull to the origin


def test_bad_weights_rejected():
    import pytest
    with pytest.raises(ValueError, match="not all zero"):
        JointLoss(3, 4, softmax=0, centre=0, triplet=0)
