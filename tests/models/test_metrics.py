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
    # specificity of c is defined (tn=95, fp=0): 1.0
    assert m["specificity"] == pytest.approx((30 / 35 + 50 / 60 + 1.0) / 3)


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
