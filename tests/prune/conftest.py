import pytest
import torch
from torch import nn

from dnnzip.data import synthetic
from dnnzip.registry import Context


class ResNetLike(nn.Module):
    """conv-BN stem, one residual block, flatten into a linear head."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(1, 8, 3, padding=1)
        self.b1 = nn.BatchNorm2d(8)
        self.c2 = nn.Conv2d(8, 8, 3, padding=1)
        self.b2 = nn.BatchNorm2d(8)
        self.c3 = nn.Conv2d(8, 6, 3, padding=1)
        self.fc = nn.Linear(6 * 4 * 4, 5)

    def forward(self, x):
        x = torch.relu(self.b1(self.c1(x)))
        x = torch.relu(self.b2(self.c2(x)) + x)
        x = nn.functional.max_pool2d(torch.relu(self.c3(x)), 4)
        return self.fc(x.flatten(1))


class ConvRNN(nn.Module):
    def __init__(self, cls=nn.GRU, layers=2, use_state=False):
        super().__init__()
        self.conv = nn.Conv1d(3, 12, 3, padding=1)
        self.rnn = cls(12, 16, num_layers=layers, batch_first=True)
        self.fc = nn.Linear(16, 5)
        self.use_state = use_state

    def forward(self, x):
        o, h = self.rnn(torch.relu(self.conv(x)).permute(0, 2, 1))
        if self.use_state:
            h = h[0] if isinstance(h, tuple) else h
            return self.fc(h[-1])
        return self.fc(o[:, -1])


def make_ctx(shape, n=96, epochs=0, seed=0):
    data = synthetic(shape, 5, n=n, seed=seed)
    return Context(data=data, example_input=data.example_input(4), epochs=epochs,
                   batch_size=32, max_batches=2, seed=seed)


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(1)
    torch.manual_seed(0)


def reload(model, base):
    """What the artifact does: rebuild the module tree from its spec, then load the weights."""
    from dnnzip.nn.spec import describe, rebuild_into
    new = rebuild_into(base, describe(model))
    new.load_state_dict(model.state_dict(), strict=True)
    return new.eval()


class _Helpers:
    ResNetLike = ResNetLike
    ConvRNN = ConvRNN
    make_ctx = staticmethod(make_ctx)
    reload = staticmethod(reload)


@pytest.fixture
def h():
    """Shared models and helpers (a fixture: test modules are imported with importlib)."""
    return _Helpers
