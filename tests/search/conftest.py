import pytest
import torch

from dnnzip import zoo
from dnnzip.data import load_data
from dnnzip.train import TrainSettings, fit


@pytest.fixture(scope="session")
def digits():
    return load_data("digits", seed=0)


@pytest.fixture(scope="session")
def small_mlp(digits):
    """A small LeNet-300-style MLP trained on digits for a few epochs (~1 s)."""
    torch.manual_seed(0)
    model = zoo.build("lenet300", input_size=8, hidden=[48, 24])
    fit(model, digits, TrainSettings(epochs=8, batch_size=64, lr=3e-3, progress=False, seed=0))
    return model.eval()
