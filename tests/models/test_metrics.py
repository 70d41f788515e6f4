"""Metrics from a confusion matrix, against a hand-computed one."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from models.metrics import ConfusionMatrix, metrics_from_confusion


def test_confusion_matrix_accumulates_across_batches_and_drops_ignore():
    cm = ConfusionMatrix(3, ignore_index=255)
    cm.update(torch.tensor([[0, 1], [2, 2]]), torch.tensor([[0, 1], [1, 255]]))
    cm.update(torch.tensor([0, 0, 2]), torch.tensor([0, 2, 2]))
    expected = np.array([[2, 0, 0],   # true 0: predicted 0 twice
                         [0, 1, 1],   # true 1: once right, once as 2
                         [1, 0, 1]])  # true 2: once as 0, once right
    np.testing.assert_array_equal(cm.compute(), expected)


def test_multiclass_metrics_by_hand():
    cm = np.array([[50, 10, 0], [5, 30, 0], [0, 0, 0]])  # class c absent and never predicted
    m = metrics_from_confusion(cm, ["a", "b", "c"])
    iou_a, iou_b = 50 / (50 + 5 + 10), 30 / (30 + 10 + 5)
    assert m["iou/a"] == pytest.approx(iou_a) and m["iou/b"] == pytest.approx(iou_b) and math.isnan(m["iou/c"])
    assert m["miou"] == pytest.approx((iou_a + iou_b) / 2)  # undefined classes stay out of the mean
    assert m["pixel_acc"] == pytest.approx(80 / 95)
    assert m["dice"] == pytest.approx((100 / 115 + 60 / 75) / 2)
    assert m["precision"] == pytest.approx((50 / 55 + 30 / 40) / 2)
    assert m["recall"] == pytest.approx((50 / 60 + 30 / 35) / 2)
    # c is neither in the labels nor predicted: it leaves every mean, specificity's too
    assert m["specificity"] == pytest.approx((30 / 35 + 50 / 60) / 2)
    assert all(math.isnan(v) for v in (m["iou/c"],))


def test_class_in_labels_but_never_predicted_has_precision_zero():
    # rows true, columns predicted; class b is in the labels (10 pixels) but never predicted
    cm = np.array([[40, 0, 5], [6, 0, 4], [0, 0, 45]])
    m = metrics_from_confusion(cm, ["a", "b", "c"])
    assert m["precision"] == pytest.approx((40 / 46 + 0.0 + 45 / 54) / 3)  # b counts, as 0
    assert m["recall"] == pytest.approx((40 / 45 + 0.0 + 45 / 45) / 3)
    assert m["iou/b"] == 0.0 and m["dice"] == pytest.approx((80 / 91 + 0.0 + 90 / 99) / 3)


def test_class_predicted_but_absent_has_recall_zero():
    cm = np.array([[40, 5], [0, 0]])  # b never in the labels, predicted 5 times
    m = metrics_from_confusion(cm, ["a", "b"])
    assert m["recall"] == pytest.approx((40 / 45 + 0.0) / 2) and m["precision"] == pytest.approx((1.0 + 0.0) / 2)


def test_binary_foreground_never_predicted_scores_zero_and_absent_everywhere_is_nan():
    m = metrics_from_confusion(np.array([[80, 0], [20, 0]]), ["background", "road"], positive=1)
    assert m["precision"] == 0.0 and m["recall"] == 0.0 and m["dice"] == 0.0
    m = metrics_from_confusion(np.array([[100, 0], [0, 0]]), ["background", "road"], positive=1)
    assert math.isnan(m["precision"]) and math.isnan(m["iou/road"]) and m["miou"] == 1.0


def test_macro_means_agree_with_torchmetrics_and_scikit_learn():
    from sklearn.metrics import precision_score, recall_score
    from torchmetrics.functional.classification import multiclass_precision, multiclass_recall

    g = torch.Generator().manual_seed(0)
    target = torch.randint(0, 5, (4000,), generator=g)  # classes 0-4 in the labels; 5 never
    pred = torch.randint(0, 6, (4000,), generator=g)  # 5 predicted (absent from the labels)
    pred[pred == 3] = 0  # 3 is in the labels but never predicted
    cm = ConfusionMatrix(7)  # 6 neither in the labels nor predicted
    cm.update(pred, target)
    m = metrics_from_confusion(cm.compute(), [str(i) for i in range(7)])
    for ours, theirs in (("precision", multiclass_precision), ("recall", multiclass_recall)):
        assert m[ours] == pytest.approx(float(theirs(pred, target, num_classes=7, average="macro")), abs=1e-6)
    labels = list(range(6))  # scikit-learn averages over the labels given: those present or predicted
    assert m["precision"] == pytest.approx(precision_score(target, pred, labels=labels, average="macro",
                                                           zero_division=0))
    assert m["recall"] == pytest.approx(recall_score(target, pred, labels=labels, average="macro", zero_division=0))


def test_predicted_but_absent_class_scores_zero():
    m = metrics_from_confusion(np.array([[8, 2], [0, 0]]), ["a", "b"])
    assert m["iou/b"] == 0.0 and m["miou"] == pytest.approx((0.8 + 0.0) / 2)


def test_binary_metrics_are_the_foregrounds():
    cm = np.array([[70, 10], [5, 15]])  # rows true (background, road)
    m = metrics_from_confusion(cm, ["background", "road"], positive=1)
    assert m["iou/road"] == pytest.approx(15 / 30) and m["iou/background"] == pytest.approx(70 / 85)
    assert m["miou"] == pytest.approx((15 / 30 + 70 / 85) / 2)
    assert m["dice"] == pytest.approx(30 / 45)
    assert m["precision"] == pytest.approx(15 / 25) and m["recall"] == pytest.approx(15 / 20)
    assert m["specificity"] == pytest.approx(70 / 80) and m["pixel_acc"] == pytest.approx(0.85)
