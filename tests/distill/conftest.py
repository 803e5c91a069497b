"""Shared fixtures: sklearn digits (8x8, 10 classes) and tiny MLPs trained in well under a second."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dnnzip.data import load_data

torch.set_num_threads(1)


def mlp(hidden: int = 32, seed: int = 0, classes: int = 10) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, classes))


def train_ce(model: nn.Module, data, epochs: int = 5, lr: float = 1e-2, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(epochs):
        for x, y in data.loader("train", batch_size=64, shuffle=True, seed=seed):
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
    return model.eval()


@pytest.fixture(scope="session")
def digits():
    return load_data("digits", seed=0)


@pytest.fixture(scope="session")
def teacher(digits):
    return train_ce(mlp(hidden=128, seed=1), digits, epochs=8)
