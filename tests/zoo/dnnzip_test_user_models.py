"""A user's own architectures, loaded by name in tests/zoo/test_builder.py (not a test file)."""
from torch import nn

NOT_CALLABLE = 3


def build(*, hidden: int = 16, num_classes: int = 10) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))


def not_a_model(*, size: int = 3) -> list:
    return [0] * size
