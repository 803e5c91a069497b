import torch

from dnnzip.quant.fold import analyze, fold_batchnorm


def test_graph_facts_and_folding_preserves_outputs(tiny):
    model, ctx = tiny
    facts = analyze(model)
    assert facts.bn_after == {"features.0": "features.1", "features.4": "features.5"}
    assert facts.relu_after["features.0"] == "features.2"
    assert facts.relu_after["fc1"] == ""          # functional relu
    assert facts.producer["fc1"] == "features.4"  # through MaxPool + flatten
    assert facts.producer["fc2"] == "fc1"
    x = ctx.example_input
    ref = model(x)
    import copy
    folded = copy.deepcopy(model)
    assert sorted(fold_batchnorm(folded, facts)) == ["features.0", "features.4"]
    assert isinstance(folded.features[1], torch.nn.Identity)
    assert torch.allclose(folded(x), ref, atol=1e-5)


def test_sequential_fallback_when_untraceable():
    class Branchy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.body = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2),
                                            torch.nn.ReLU())

        def forward(self, x):
            if x.sum() > 0:  # data-dependent control flow: fx cannot trace
                return self.body(x)
            return self.body(-x)

    facts = analyze(Branchy())
    assert facts.bn_after == {"body.0": "body.1"}
    assert facts.relu_after == {"body.0": "body.2"}
