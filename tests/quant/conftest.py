import pytest
import torch
from torch import nn

from dnnzip.data import synthetic
from dnnzip.registry import Context


class TinyCNN(nn.Module):
    """Conv-BN-ReLU-Pool x2 + Linear-ReLU-Linear on 1x12x12 inputs."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(6, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2))
        self.fc1 = nn.Linear(8 * 3 * 3, 16)
        self.fc2 = nn.Linear(16, 4)

    def forward(self, x):
        x = self.features(x).flatten(1)
        return self.fc2(torch.relu(self.fc1(x)))


@pytest.fixture
def tiny():
    torch.manual_seed(0)
    model = TinyCNN()
    with torch.no_grad():  # non-trivial BN statistics
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
    data = synthetic((1, 12, 12), 4, n=128, seed=0)
    ctx = Context(data=data, example_input=data.example_input(4), epochs=1, batch_size=32,
                  max_batches=2, seed=0)
    return model.eval(), ctx
