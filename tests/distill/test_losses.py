import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dnnzip.distill.losses import (angular_loss, cs_kd_loss, hint_loss, kd_loss, kd_loss_fn)
from dnnzip.errors import ConfigError


def test_kd_loss_matches_hinton_formula():
    torch.manual_seed(0)
    s, t, y = torch.randn(6, 5), torch.randn(6, 5), torch.randint(0, 5, (6,))
    T, alpha = 3.0, 0.7
    p_t = F.softmax(t / T, -1)
    kl = (p_t * (p_t.log() - F.log_softmax(s / T, -1))).sum(-1).mean()
    expected = alpha * T * T * kl + (1 - alpha) * F.cross_entropy(s, y)
    torch.testing.assert_close(kd_loss(s, t, y, T=T, alpha=alpha), expected)


def test_alpha_zero_is_cross_entropy_and_identical_logits_have_no_soft_term():
    s, y = torch.randn(4, 3), torch.tensor([0, 1, 2, 0])
    torch.testing.assert_close(kd_loss(s, torch.randn(4, 3), y, T=2.0, alpha=0.0),
                               F.cross_entropy(s, y))
    assert float(kd_loss(s, s.clone(), None, T=2.0)) == pytest.approx(0.0, abs=1e-6)


def test_t_squared_keeps_soft_gradient_scale():
    # Eq. 22: d KL / d s = (p - q) / T ~ (s - t) / (l T^2) for large T; the T^2 factor makes the
    # soft term's gradient independent of T (Hinton et al. Sec. 2.1). Without it the ratio is 1/4.
    gen = torch.Generator().manual_seed(0)
    t = torch.randn(8, 10, generator=gen)
    s0 = torch.randn(8, 10, generator=gen)
    norms = []
    for T in (8.0, 16.0):
        s = s0.clone().requires_grad_()
        kd_loss(s, t, None, T=T).backward()
        norms.append(float(s.grad.norm()))
    assert 0.8 < norms[1] / norms[0] < 1.25


@pytest.mark.parametrize("T", [0.0, -1.0, float("nan")])
def test_bad_temperature_is_config_error(T):
    with pytest.raises(ConfigError, match="temperature"):
        kd_loss(torch.randn(2, 3), torch.randn(2, 3), None, T=T)
    with pytest.raises(ConfigError, match="temperature"):
        kd_loss_fn(nn.Linear(3, 3), T=T)


def test_teacher_shape_mismatch_is_config_error():
    with pytest.raises(ConfigError, match=r"teacher output shape \(2, 4\) differs"):
        kd_loss(torch.randn(2, 3), torch.randn(2, 4), None)


def test_kd_loss_fn_is_a_trainer_hook_and_leaves_teacher_frozen():
    teacher = nn.Linear(4, 3)
    before = teacher.weight.clone()
    student = nn.Linear(4, 3)
    fn = kd_loss_fn(teacher, T=2.0, alpha=0.5)
    x, y = torch.randn(5, 4), torch.randint(0, 3, (5,))
    loss = fn(student, x, y, student(x))
    loss.backward()
    assert student.weight.grad is not None and teacher.weight.grad is None
    assert torch.equal(teacher.weight, before)


def test_cs_kd_loss_is_ce_when_pair_agrees():
    s, y = torch.randn(4, 3), torch.tensor([0, 1, 2, 0])
    torch.testing.assert_close(cs_kd_loss(s, s.clone(), y, T=4.0, lam=1.0), F.cross_entropy(s, y))
    assert cs_kd_loss(s, torch.randn(4, 3), y, T=4.0, lam=1.0) > F.cross_entropy(s, y)


def test_angular_loss_eq24_values():
    a = torch.randn(3, 8)
    assert float(angular_loss(a, 5 * a)) == pytest.approx(0.0, abs=1e-6)  # scale-invariant
    assert float(angular_loss(a, -a)) == pytest.approx(4.0, abs=1e-5)  # (1 - (-1))^2
    e1, e2 = torch.eye(2)[:1], torch.eye(2)[1:]
    assert float(angular_loss(e1, e2)) == pytest.approx(1.0)


def test_feature_shape_mismatch_is_named():
    with pytest.raises(ConfigError, match="projection"):
        angular_loss(torch.randn(2, 3), torch.randn(2, 4))
    with pytest.raises(ConfigError, match="projection"):
        hint_loss(torch.randn(2, 3), torch.randn(2, 4))


def test_kd_loss_fn_accepts_the_recipe_spelling_and_keeps_teacher_mode():
    teacher = nn.Sequential(nn.Linear(4, 3), nn.Dropout(0.5)).train()
    fn = kd_loss_fn(teacher, temperature=2.0, alpha=1.0)
    x = torch.randn(5, 4)
    student = nn.Linear(4, 3)
    a = fn(student, x, None, student(x))
    b = fn(student, x, None, student(x))
    assert teacher.training  # the caller's teacher is not switched to eval
    torch.testing.assert_close(a, b)  # the private copy runs in eval mode (no dropout noise)
    with pytest.raises(ConfigError, match="alpha"):
        kd_loss_fn(teacher, alpha=1.5)


def test_cached_teacher_logits_equal_live_teacher_through_a_shuffled_fit_loader(digits, teacher):
    from dnnzip.distill.losses import CachedTeacher
    live, cached = kd_loss_fn(teacher, T=4.0, alpha=0.8), kd_loss_fn(teacher, T=4.0, alpha=0.8,
                                                                       cache=digits.train)
    assert isinstance(cached.teacher, CachedTeacher) and not cached.teacher.teacher.training
    student = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    for x, y in digits.loader("train", batch_size=50, shuffle=True, seed=3):
        logits = student(x)
        torch.testing.assert_close(cached(student, x, y, logits), live(student, x, y, logits),
                                   rtol=1e-5, atol=1e-6)
    assert cached.teacher.hits == len(digits.train) and cached.teacher.misses == 0


def test_cached_teacher_falls_back_on_unseen_inputs_and_stays_in_eval(digits, teacher):
    from dnnzip.distill.losses import CachedTeacher
    torch.manual_seed(0)
    t = nn.Sequential(nn.Flatten(), nn.Linear(64, 10), nn.Dropout(0.5))  # dropout shows train mode
    ct = CachedTeacher(t, digits.train)
    ct.train()
    assert not ct.teacher.training
    x_seen = torch.stack([digits.train[i][0] for i in range(3)])
    x_new = x_seen + 0.5
    out = ct(torch.cat([x_seen, x_new]))
    with torch.no_grad():
        ref = t.eval()(torch.cat([x_seen, x_new]))
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    assert (ct.hits, ct.misses) == (3, 3)


def test_cached_teacher_rejects_empty_or_unsized_cache():
    from torch.utils.data import TensorDataset

    from dnnzip.errors import DataError
    empty = TensorDataset(torch.zeros(0, 4), torch.zeros(0, dtype=torch.long))
    with pytest.raises(DataError, match="empty"):
        kd_loss_fn(nn.Linear(4, 3), cache=empty)
    with pytest.raises(ConfigError, match="sized Dataset"):
        kd_loss_fn(nn.Linear(4, 3), cache=iter([]))


def test_kd_loss_fn_queries_the_teacher_in_eval_mode_and_leaves_its_flag():
    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Linear(4, 3), nn.Dropout(0.9)).train()
    fn = kd_loss_fn(teacher, T=2.0, alpha=1.0)
    student, x = nn.Linear(4, 3), torch.randn(16, 4)
    logits = student(x)
    a, b = fn(student, x, None, logits), fn(student, x, None, logits)
    torch.testing.assert_close(a, b)  # dropout active in the teacher would make these differ
    assert teacher.training  # the caller's module keeps its own flag
    torch.testing.assert_close(a, kd_loss(logits, teacher.eval()(x), None, T=2.0))
    assert fn.teacher is not teacher
