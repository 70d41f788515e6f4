"""Losses and class weights against hand computations; the ignore index is honoured everywhere."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from models import catalog
from models.errors import ModelError, UnknownNameError
from models.losses import (
    create_loss,
    enet_weights,
    loss_graph_safe,
    loss_needs_class_weights,
    loss_parts,
    mfb_weights,
)

IGN = 255


def binary_case():
    logits = torch.tensor([[[[2.0, -1.0], [0.5, 3.0]]]])  # N=1, 1 channel, 2x2
    target = torch.tensor([[[1, 0], [IGN, 0]]])
    return logits, target


def test_masked_bce_by_hand():
    logits, target = binary_case()
    # valid pixels: (2.0 -> 1), (-1.0 -> 0), (3.0 -> 0)
    expected = (math.log1p(math.exp(-2.0)) + math.log1p(math.exp(-1.0)) + math.log1p(math.exp(3.0))) / 3
    assert create_loss("ce", "binary")(logits, target).item() == pytest.approx(expected, rel=1e-6)


def test_weighted_bce_matches_weighted_ce_normalisation():
    logits, target = binary_case()
    w = torch.tensor([2.0, 5.0])  # background, road
    terms = [(5.0, math.log1p(math.exp(-2.0))), (2.0, math.log1p(math.exp(-1.0))), (2.0, math.log1p(math.exp(3.0)))]
    expected = sum(a * b for a, b in terms) / sum(a for a, _ in terms)
    got = create_loss("weighted_ce_enet", "binary", class_weights=w)(logits, target)
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_binary_dice_by_hand_and_tversky_half_equals_dice():
    logits, target = binary_case()
    p = torch.sigmoid(logits)[0, 0]
    t = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    valid = torch.tensor([[1.0, 1.0], [0.0, 1.0]])
    inter, card = (p * t * valid).sum(), (p * valid).sum() + t.sum()
    expected = 1 - 2 * inter / card
    assert create_loss("dice", "binary")(logits, target).item() == pytest.approx(expected.item(), rel=1e-5)
    tversky = create_loss("tversky", "binary", alpha=0.5, beta=0.5, gamma=1.0)(logits, target)
    assert tversky.item() == pytest.approx(expected.item(), rel=1e-5)
    # alpha weighs false positives, beta false negatives
    fp, fn = (p * (1 - t) * valid).sum(), ((1 - p) * t * valid).sum()
    tv = 1 - inter / (inter + 0.3 * fp + 0.7 * fn)
    got = create_loss("tversky", "binary", alpha=0.3, beta=0.7)(logits, target)
    assert got.item() == pytest.approx(tv.item(), rel=1e-5)


def test_binary_focal_by_hand():
    logits, target = binary_case()
    valid_logits, valid_t = torch.tensor([2.0, -1.0, 3.0]), torch.tensor([1.0, 0.0, 0.0])
    bce = F.binary_cross_entropy_with_logits(valid_logits, valid_t, reduction="none")
    expected = ((1 - torch.exp(-bce)) ** 2 * bce).mean()
    assert create_loss("focal", "binary")(logits, target).item() == pytest.approx(expected.item(), rel=1e-5)


def test_multiclass_ce_and_weighted_ce_by_hand():
    logits = torch.tensor([[[[1.0]], [[2.0]], [[0.0]]], [[[0.0]], [[0.0]], [[3.0]]]])  # N=2, C=3, 1x1
    target = torch.tensor([[[1]], [[0]]])
    lsm = torch.log_softmax(logits, 1)[:, :, 0, 0]
    assert create_loss("ce", "multiclass")(logits, target).item() == pytest.approx(
        (-(lsm[0, 1] + lsm[1, 0]) / 2).item(), rel=1e-6)
    w = torch.tensor([4.0, 1.0, 1.0])
    got = create_loss("weighted_ce_enet", "multiclass", class_weights=w)(logits, target)
    assert got.item() == pytest.approx((-(1 * lsm[0, 1] + 4 * lsm[1, 0]) / 5).item(), rel=1e-6)


@pytest.mark.parametrize("name", sorted(catalog.LOSSES))
@pytest.mark.parametrize("task", ["binary", "multiclass"])
def test_every_loss_ignores_ignored_pixels(name, task):
    torch.manual_seed(0)
    channels = 1 if task == "binary" else 4
    logits = torch.randn(2, channels, 8, 8)
    target = torch.randint(0, 2 if task == "binary" else 4, (2, 8, 8))
    target[:, :2] = IGN
    loss = create_loss(name, task, class_weights=torch.ones(2 if task == "binary" else 4))
    base = loss(logits, target)
    changed = logits.clone()
    changed[:, :, :2] = torch.randn_like(changed[:, :, :2]) * 10  # only ignored pixels move
    assert torch.isfinite(base)
    assert loss(changed, target).item() == pytest.approx(base.item(), rel=1e-5, abs=1e-6)


def test_weighted_sum_of_two_losses():
    logits, target = binary_case()
    combo = create_loss("focal+dice", "binary", weights=(1.0, 0.5))
    expected = create_loss("focal", "binary")(logits, target) + 0.5 * create_loss("dice", "binary")(logits, target)
    assert combo(logits, target).item() == pytest.approx(expected.item(), rel=1e-6)
    bce_dice = create_loss("bce_dice", "binary")(logits, target)
    assert bce_dice.item() == pytest.approx(
        (create_loss("ce", "binary")(logits, target) + create_loss("dice", "binary")(logits, target)).item(), rel=1e-6)


def test_loss_names_are_parsed_in_one_place_spaces_and_all():
    """``loss.name`` is split on ``+`` once (``loss_parts``): the spaces around ``+`` that the spec allows reach every
    reader alike, so ``ce + weighted_ce_enet`` needs the class weights it validated with (a trial of it used to fail
    for want of them)."""
    assert loss_parts(" dice+ ce ") == ("dice", "ce") and loss_parts("focal") == ("focal",)
    assert loss_needs_class_weights("ce + weighted_ce_enet") and not loss_needs_class_weights("ce + dice")
    assert not loss_graph_safe("dice + focal") and loss_graph_safe("ce + dice")
    with pytest.raises(UnknownNameError, match="unknown loss 'dise'"):
        loss_parts("ce + dise")
    with pytest.raises(ModelError, match="combines more than two losses"):
        loss_parts("ce+dice+focal")
    logits, target = binary_case()
    weights = torch.tensor([0.5, 2.0])
    spaced = create_loss("ce + weighted_ce_enet", "binary", class_weights=weights)(logits, target)
    plain = create_loss("ce+weighted_ce_enet", "binary", class_weights=weights)(logits, target)
    assert spaced.item() == plain.item()


def test_unknown_loss_lists_choices():
    with pytest.raises(UnknownNameError, match=r"unknown loss 'dise' \(did you mean 'dice'\?"):
        create_loss("dise", "binary")


def test_enet_weights_by_hand():
    counts = np.array([600, 300, 100, 0])
    p = counts / 1000
    np.testing.assert_allclose(enet_weights(counts), 1 / np.log(1.02 + p))
    w = enet_weights(counts)
    assert w[3] == pytest.approx(1 / math.log(1.02)) and w[0] == pytest.approx(1 / math.log(1.62))
    assert list(np.argsort(w)) == [0, 1, 2, 3]  # rarer class, larger weight
    np.testing.assert_allclose(enet_weights(counts, c=1.2), 1 / np.log(1.2 + p))


def test_median_frequency_weights_by_hand():
    # class 0 in images totalling 1000 px with 600 of its own, class 1: 300 of 1000, class 2: 100 of 400
    w = mfb_weights([600, 300, 100], [1000, 1000, 400])
    freq = np.array([0.6, 0.3, 0.25])
    np.testing.assert_allclose(w, np.median(freq) / freq)
    assert mfb_weights([5, 0], [10, 0])[1] == 0.0
