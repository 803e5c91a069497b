import pytest
import torch

from dnnzip.distill.report import ece, match_rate


def test_ece_zero_for_confident_correct_and_one_for_confident_wrong():
    y = torch.tensor([0, 1, 2, 1])
    sure = torch.full((4, 3), -50.0)
    sure[torch.arange(4), y] = 50.0
    assert ece(sure, y) == pytest.approx(0.0, abs=1e-6)
    assert ece(sure, (y + 1) % 3) == pytest.approx(1.0, abs=1e-6)


def test_ece_of_calibrated_uniform_guess():
    # confidence 0.5 on two classes, half right: perfectly calibrated
    logits = torch.zeros(4, 2)
    y = torch.tensor([0, 1, 0, 1])
    assert ece(logits, y) == pytest.approx(0.0, abs=1e-6)


def test_match_rate():
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    b = torch.tensor([[2.0, 0.0], [3.0, 0.0], [0.0, 1.0]])
    assert match_rate(a, b) == pytest.approx(1 / 3)
