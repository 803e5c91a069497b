"""fit / evaluate / predict / finetune on tiny models and data."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dnnzip.data import load_data, synthetic
from dnnzip.errors import ConfigError, DnnzipError, FormatError
from dnnzip.registry import Context
from dnnzip.train import DivergedError, TrainSettings, evaluate, finetune, fit, predict

QUIET = dict(progress=False, threads=1)


def _mlp(n_in=8, n_out=3, dropout=0.0, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(n_in, 16), nn.ReLU(), nn.Dropout(dropout),
                         nn.Linear(16, n_out))


@pytest.fixture(scope="module")
def data():
    return synthetic((8,), 3, n=240, seed=0)


def test_fit_on_digits_beats_chance():
    b = load_data("digits", limit=600)
    m = _mlp(64, 10)
    before = evaluate(m, b)
    r = fit(m, b, TrainSettings(epochs=4, batch_size=32, lr=1e-2, **QUIET))
    after = evaluate(m, b)
    assert before < 0.3 and after > 0.7
    assert len(r.history) == 4 and r.history[0].train_loss > r.history[-1].train_loss
    assert not m.training  # left in eval mode


def test_fit_on_synthetic_and_history(data):
    m = _mlp()
    r = fit(m, data, TrainSettings(epochs=3, batch_size=32, lr=1e-2, **QUIET))
    assert evaluate(m, data.test) > 0.8
    assert [h.epoch for h in r.history] == [1, 2, 3] and r.best_epoch in (1, 2, 3)
    assert r.history[-1].lr < 1e-2 * 0.1  # cosine schedule decayed
    assert r.to_dict()["history"][0]["val_score"] == r.history[0].val_score


def test_early_stop_when_val_stops_improving(data):
    m = _mlp()
    r = fit(m, data, TrainSettings(epochs=6, lr=1e-12, schedule="constant", patience=2, **QUIET))
    assert r.stopped_early and len(r.history) == 3 and r.best_epoch == 1


def test_best_val_weights_are_restored(data):
    steps = {"n": 0}

    def sabotage(model, x, y, logits):  # after epoch 1, train towards wrong labels
        steps["n"] += 1
        return -5.0 * F.cross_entropy(logits, y) if steps["n"] > 8 else logits.sum() * 0

    m = _mlp()
    r = fit(m, data, TrainSettings(epochs=3, batch_size=24, lr=1e-2, patience=None, **QUIET),
            extra_loss=sabotage)
    assert r.best_epoch == 1 and r.history[-1].val_score < r.history[0].val_score
    assert evaluate(m, data.val) == pytest.approx(r.best_val_score)


def test_max_batches_caps_steps(data):
    calls = []
    fit(_mlp(), data, TrainSettings(epochs=2, batch_size=8, max_batches=3, **QUIET),
        after_step=lambda m: calls.append(1))
    assert len(calls) == 6


class _Interrupt(Exception):
    pass


def test_checkpoint_resume_matches_uninterrupted_run(data, tmp_path):
    s = TrainSettings(epochs=3, batch_size=32, patience=None, **QUIET)
    ref = _mlp(dropout=0.3)
    fit(ref, data, s)

    ck = tmp_path / "run" / "fit.ckpt"
    m = _mlp(dropout=0.3)
    steps = {"n": 0}

    def crash(model):
        steps["n"] += 1
        if steps["n"] == 10:  # inside epoch 2 (6 batches per epoch)
            raise _Interrupt

    with pytest.raises(_Interrupt):
        fit(m, data, s, checkpoint=ck, after_step=crash)
    saved = torch.load(ck, weights_only=True)
    assert saved["epoch"] == 1

    resumed = _mlp(dropout=0.3, seed=99)  # a fresh process would start from other weights
    r = fit(resumed, data, s, checkpoint=ck)
    assert r.resumed_from == 1 and [h.epoch for h in r.history] == [1, 2, 3]
    for k, v in ref.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[k], v, rtol=0, atol=0)
    assert not list(ck.parent.glob("*.part"))


def test_checkpoint_of_finished_run_does_not_retrain(data, tmp_path):
    s = TrainSettings(epochs=2, batch_size=32, **QUIET)
    ck = tmp_path / "c.ckpt"
    fit(_mlp(), data, s, checkpoint=ck)
    calls = []
    r = fit(_mlp(), data, s, checkpoint=ck, after_step=lambda m: calls.append(1))
    assert calls == [] and r.resumed_from == 2 and len(r.history) == 2
    r = fit(_mlp(), data, s, checkpoint=ck, resume=False, after_step=lambda m: calls.append(1))
    assert calls and r.resumed_from == 0


def test_bad_checkpoints(data, tmp_path):
    s = TrainSettings(epochs=1, batch_size=32, **QUIET)
    ck = tmp_path / "c.ckpt"
    fit(_mlp(), data, s, checkpoint=ck)
    with pytest.raises(ConfigError, match=r"lr: 0.001 -> 0.01"):
        fit(_mlp(), data, TrainSettings(epochs=2, lr=1e-2, batch_size=32, **QUIET), checkpoint=ck)
    with pytest.raises(FormatError, match="does not fit this model"):
        fit(_mlp(n_out=5), synthetic((8,), 5, n=60), s, checkpoint=ck)
    ck.write_bytes(b"not a checkpoint")
    with pytest.raises(FormatError, match="resume=False"):
        fit(_mlp(), data, s, checkpoint=ck)
    torch.save({"format": "other"}, ck)
    with pytest.raises(FormatError, match="not a dnnzip.fit/1"):
        fit(_mlp(), data, s, checkpoint=ck)


def test_hooks_are_called_and_mask_stays_applied(data):
    m = _mlp()
    mask = (torch.arange(m[1].weight.numel()) % 2 == 0).view_as(m[1].weight)
    seen = {"loss_fn": 0, "extra": 0}

    def loss_fn(model, x, y, logits):
        assert model is m and logits.shape == (len(y), 3) and x.shape[1:] == (8,)
        seen["loss_fn"] += 1
        return F.cross_entropy(logits, y)

    def extra(model, x, y, logits):
        seen["extra"] += 1
        return 1e-4 * model[1].weight.abs().sum()

    def apply_mask(model):
        with torch.no_grad():
            model[1].weight.mul_(mask)

    r = fit(m, data, TrainSettings(epochs=2, batch_size=32, max_batches=4, weight_decay=1e-2,
                                   **QUIET), loss_fn=loss_fn, extra_loss=extra,
            after_step=apply_mask)
    assert seen == {"loss_fn": 8 + 0, "extra": 8}
    assert torch.all(m[1].weight[~mask] == 0) and torch.all(m[1].weight[mask] != 0)
    assert r.best_val_score > 0.5


def test_nan_loss_raises_with_advice(data):
    bad = synthetic((8,), 3, n=60)
    with pytest.raises(DivergedError, match="Lower the learning rate") as err:
        fit(_mlp(), bad, TrainSettings(epochs=1, **QUIET),
            extra_loss=lambda m, x, y, lo: torch.tensor(float("nan")))
    assert isinstance(err.value, DnnzipError) and err.value.exit_code == 1


def test_evaluate_and_predict_accept_bundle_dataset_loader(data):
    m = _mlp().train()
    a = evaluate(m, data)
    assert a == evaluate(m, data.test) == evaluate(m, data.loader("test", 7))
    assert m.training  # mode restored
    logits = predict(m, data.loader("test", 16))
    assert logits.shape == (len(data.test), 3)
    y = torch.stack([data.test[i][1] for i in range(len(data.test))])
    assert (logits.argmax(1) == y).float().mean().item() == pytest.approx(a)


def test_finetune_uses_context(data):
    calls = []
    m = _mlp()
    ctx = Context(data=data, epochs=2, batch_size=16, lr=1e-3, max_batches=2, seed=1)
    r = finetune(m, ctx, after_step=lambda mod: calls.append(1))
    assert len(calls) == 4 and len(r.history) == 2
    before = {k: v.clone() for k, v in m.state_dict().items()}
    assert finetune(m, ctx, epochs=0).history == []
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())
    with pytest.raises(ConfigError, match="ctx.data"):
        finetune(m, Context(epochs=1))


def test_threads_restored(data):
    n = torch.get_num_threads()
    fit(_mlp(), data, TrainSettings(epochs=1, max_batches=1, progress=False, threads=1))
    assert torch.get_num_threads() == n


def test_progress_goes_to_stderr_only_when_enabled(data, capsys):
    fit(_mlp(), data, TrainSettings(epochs=1, max_batches=2, progress=True, threads=1))
    out, err = capsys.readouterr()
    assert out == "" and "epoch 1: loss" in err
    fit(_mlp(), data, TrainSettings(epochs=1, max_batches=2, progress=False, threads=1))
    assert capsys.readouterr() == ("", "")


@pytest.mark.parametrize("kw,name", [
    ({"epochs": -1}, "epochs"), ({"lr": 0.0}, "lr"), ({"optimizer": "lion"}, "optimizer"),
    ({"schedule": "step"}, "schedule"), ({"patience": 0}, "patience"),
    ({"max_batches": 0}, "max_batches"), ({"batch_size": 1.5}, "batch_size"),
])
def test_settings_are_checked(kw, name):
    with pytest.raises(ConfigError, match=f"'{name}' parameter of TrainSettings"):
        TrainSettings(**kw)


def test_sgd_trains(data):
    m = _mlp()
    fit(m, data, TrainSettings(epochs=2, batch_size=16, lr=0.05, optimizer="sgd", **QUIET))
    assert evaluate(m, data.test) > 0.8


def test_non_accuracy_bundle_selects_on_validation_loss(data):
    from dnnzip.data import from_datasets
    cos = from_datasets(data.train, data.test, metric="cosine", val_fraction=0.25)
    r = fit(_mlp(), cos, TrainSettings(epochs=2, batch_size=16, lr=1e-2, **QUIET))
    scores = [h.val_score for h in r.history]
    assert all(s < 0 for s in scores) and scores[1] > scores[0]  # minus the loss, improving
