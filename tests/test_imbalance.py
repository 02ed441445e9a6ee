"""imbalance：类别权重对照 scikit-learn，采样器的类别频率，Focal Loss 对照交叉熵，阈值对照穷举。"""

import doctest
import math

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from sklearn.metrics import f1_score, roc_curve
from sklearn.utils.class_weight import compute_class_weight
from torch.utils.data import DataLoader, TensorDataset

import aigc_lib.imbalance as imbalance
from aigc_lib.imbalance import (
    FocalLoss,
    apply_threshold,
    best_threshold,
    class_counts,
    class_weights,
    resampling_sampler,
)


def random_labels(seed, n_classes=None, n=None):
    """每个类别至少出现一次、类别大小差别很大的随机标签。"""
    g = np.random.default_rng(seed)
    n_classes = n_classes or int(g.integers(2, 7))
    sizes = g.integers(1, 200, size=n_classes) ** 2 // 40 + 1  # 平方让大小悬殊
    y = np.concatenate([np.full(s, c) for c, s in enumerate(sizes)])
    return g.permutation(y)


def test_docstring_examples_run():
    assert doctest.testmod(imbalance, extraglobs={"torch": torch}).failed == 0


# ---------------------------------------------------------------- 计数与权重


@pytest.mark.parametrize("as_type", [list, np.asarray, torch.tensor])
def test_class_counts_match_numpy_bincount(as_type):
    for seed in range(20):
        y = random_labels(seed)
        assert class_counts(as_type(y.tolist())).tolist() == np.bincount(y).tolist()
    assert class_counts([1, 1], num_classes=4).tolist() == [0, 2, 0, 0]


def test_balanced_weights_equal_sklearn_on_many_label_sets():
    for seed in range(50):
        y = random_labels(seed)
        expected = compute_class_weight("balanced", classes=np.unique(y), y=y)
        got = class_weights(y, scheme="balanced")
        assert got.dtype == torch.float32 and got.shape == (len(expected),)
        np.testing.assert_allclose(got.numpy(), expected, rtol=1e-6)
        # 同样的结果也能从计数得到
        np.testing.assert_allclose(class_weights(counts=np.bincount(y)).numpy(), expected, rtol=1e-6)


def test_balanced_weights_give_every_class_the_same_total_weight():
    for seed in range(10):
        y = random_labels(seed)
        w = class_weights(y).double()
        per_class_total = torch.bincount(torch.as_tensor(y), weights=w[torch.as_tensor(y)])
        torch.testing.assert_close(per_class_total, torch.full_like(per_class_total, len(y) / len(w)))


def test_inverse_weights_proportional_to_one_over_count_with_mean_one():
    for seed in range(30):
        y = random_labels(seed)
        counts = np.bincount(y)
        w = class_weights(y, scheme="inverse").double().numpy()
        np.testing.assert_allclose(w * counts, np.full(len(counts), (w * counts)[0]), rtol=1e-5)
        assert w.mean() == pytest.approx(1.0, rel=1e-6)
        assert np.argmax(w) == np.argmin(counts)


def test_effective_number_weights_follow_the_formula_and_its_limits():
    for seed in range(30):
        counts = np.bincount(random_labels(seed))
        for beta in (0.9, 0.99, 0.999):
            raw = (1 - beta) / (1 - beta ** counts.astype(np.float64))
            np.testing.assert_allclose(
                class_weights(counts=counts, scheme="effective", beta=beta).numpy(),
                raw * len(counts) / raw.sum(),
                rtol=1e-5,
            )
        # beta=0：每类权重相同；beta -> 1：趋近于 inverse
        assert torch.allclose(class_weights(counts=counts, scheme="effective", beta=0.0), torch.ones(len(counts)))
        torch.testing.assert_close(
            class_weights(counts=counts, scheme="effective", beta=1 - 1e-9),
            class_weights(counts=counts, scheme="inverse"),
            rtol=1e-3,
            atol=0,
        )


def test_weights_reject_empty_classes_and_bad_arguments_with_chinese_messages():
    with pytest.raises(ValueError, match="一个样本都没有"):
        class_weights([0, 0, 2])
    with pytest.raises(ValueError, match="scheme"):
        class_weights([0, 1], scheme="sqrt")
    with pytest.raises(ValueError, match="恰好传一个"):
        class_weights([0, 1], counts=[1, 1])
    with pytest.raises(ValueError, match="负数"):
        class_counts([0, -1])


# ---------------------------------------------------------------- 重采样


def draw(sampler, epochs):
    return torch.tensor([i for _ in range(epochs) for i in sampler])


@pytest.mark.parametrize("mode", ["over", "balanced"])
def test_weighted_samplers_make_classes_equally_frequent(mode):
    for seed in range(3):
        y = torch.as_tensor(random_labels(seed, n_classes=3))
        counts = torch.bincount(y)
        sampler = resampling_sampler(y, mode=mode, seed=seed)
        expected_len = 3 * int(counts.max()) if mode == "over" else len(y)
        assert len(sampler) == expected_len
        idx = draw(sampler, epochs=max(1, 30_000 // expected_len))
        assert idx.min() >= 0 and idx.max() < len(y)
        freq = torch.bincount(y[idx], minlength=3).double() / len(idx)
        # 每类的期望频率是 1/3；二项分布的标准差 sqrt(p(1-p)/n)，允许 5 倍
        tolerance = 5 * math.sqrt((1 / 3) * (2 / 3) / len(idx))
        assert torch.all((freq - 1 / 3).abs() < tolerance), (freq, tolerance)
        # 同一类内每个样本也被均匀地抽到：少数类的每个样本都出现过
        minority = int(torch.argmin(counts))
        assert set(idx[y[idx] == minority].tolist()) == set(torch.nonzero(y == minority).reshape(-1).tolist())


def test_num_samples_sets_epoch_length():
    y = random_labels(0)
    assert len(list(resampling_sampler(y, mode="balanced", seed=0, num_samples=123))) == 123


def test_under_sampler_keeps_min_count_per_class_without_repeats():
    for seed in range(20):
        y = torch.as_tensor(random_labels(seed))
        counts = torch.bincount(y)
        sampler = resampling_sampler(y, mode="under", seed=seed)
        epoch1, epoch2 = list(sampler), list(sampler)
        assert len(epoch1) == len(sampler) == len(counts) * int(counts.min())
        assert len(set(epoch1)) == len(epoch1)  # 不重复
        assert torch.bincount(y[epoch1]).tolist() == [int(counts.min())] * len(counts)
        assert sorted(epoch1) == sorted(epoch2)  # 同一个子集，只是顺序重新打乱
        assert sorted(epoch1) == sorted(sampler.indices.tolist())


@pytest.mark.parametrize("mode", ["over", "under", "balanced"])
def test_samplers_are_reproducible_and_seed_dependent(mode):
    y = random_labels(3)
    torch.manual_seed(0)
    a = list(resampling_sampler(y, mode=mode, seed=7))
    torch.manual_seed(123)  # 全局随机状态不影响结果
    b = list(resampling_sampler(y, mode=mode, seed=7))
    c = list(resampling_sampler(y, mode=mode, seed=8))
    assert a == b
    assert a != c


def test_sampler_works_with_dataloader():
    y = torch.as_tensor(random_labels(1, n_classes=2))
    data = TensorDataset(torch.arange(len(y)), y)
    loader = DataLoader(data, batch_size=32, sampler=resampling_sampler(y, mode="under", seed=0))
    seen = torch.cat([xb for xb, _ in loader])
    assert len(seen) == 2 * int(torch.bincount(y).min())


def test_under_rejects_num_samples_and_unknown_mode():
    with pytest.raises(ValueError, match="balanced"):
        resampling_sampler([0, 1, 1], mode="under", num_samples=10)
    with pytest.raises(ValueError, match="mode"):
        resampling_sampler([0, 1, 1], mode="smote")


# ---------------------------------------------------------------- Focal Loss


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_focal_gamma_zero_equals_cross_entropy_with_and_without_alpha(reduction):
    for seed in range(15):
        g = torch.Generator().manual_seed(seed)
        n, c = int(torch.randint(1, 40, (1,), generator=g)), int(torch.randint(2, 8, (1,), generator=g))
        logits = torch.randn(n, c, generator=g) * 3
        target = torch.randint(0, c, (n,), generator=g)
        alpha = torch.rand(c, generator=g) + 0.1
        for weight in (None, alpha):
            ce = nn.CrossEntropyLoss(weight=weight, reduction=reduction)(logits, target)
            fl = FocalLoss(gamma=0.0, alpha=weight, reduction=reduction)(logits, target)
            torch.testing.assert_close(fl, ce, rtol=1e-5, atol=1e-6)


def test_focal_gamma_zero_equals_cross_entropy_for_sequences_with_ignore_index():
    for seed in range(20):
        g = torch.Generator().manual_seed(seed)
        logits = torch.randn(4, 5, 7, generator=g)  # (N, C, T)
        target = torch.randint(0, 5, (4, 7), generator=g)
        target[torch.rand(4, 7, generator=g) < 0.3] = -100
        target[0, 0] = 1  # 至少一个有效位置
        alpha = torch.rand(5, generator=g) + 0.1
        for weight in (None, alpha):
            ce = F.cross_entropy(logits, target, weight=weight)
            fl = FocalLoss(gamma=0.0, alpha=weight)(logits, target)
            torch.testing.assert_close(fl, ce, rtol=1e-5, atol=1e-6)


def test_focal_matches_the_formula_and_never_exceeds_cross_entropy():
    for seed in range(20):
        g = torch.Generator().manual_seed(seed)
        logits = torch.randn(30, 4, generator=g) * 4
        target = torch.randint(0, 4, (30,), generator=g)
        p_y = logits.double().softmax(-1)[torch.arange(30), target]
        ce = F.cross_entropy(logits, target, reduction="none")
        for gamma in (0.5, 1.0, 2.0, 5.0):
            fl = FocalLoss(gamma=gamma, reduction="none")(logits, target)
            expected = -((1 - p_y) ** gamma) * torch.log(p_y)
            torch.testing.assert_close(fl.double(), expected, rtol=1e-4, atol=1e-6)
            assert torch.all(fl <= ce + 1e-6)


def test_focal_with_alpha_ignore_index_and_every_reduction_matches_the_formula():
    """alpha 与 gamma > 0 同时用、还有被忽略的位置时，三种 reduction 都按定义手算对照
    （mean 与 CrossEntropyLoss 相同：除以有效位置的 alpha_y 之和）。"""
    for seed in range(20):
        g = torch.Generator().manual_seed(seed)
        logits = torch.randn(30, 4, generator=g) * 3
        target = torch.randint(0, 4, (30,), generator=g)
        target[torch.rand(30, generator=g) < 0.2] = -100
        target[0] = 2  # 至少一个有效位置
        alpha = torch.rand(4, generator=g) + 0.1
        keep = target != -100
        p_y = logits.double().softmax(-1)[keep.nonzero().squeeze(1), target[keep]]
        alpha_y = alpha.double()[target[keep]]
        for gamma in (0.5, 2.0, 5.0):
            per_sample = -alpha_y * (1 - p_y) ** gamma * torch.log(p_y)
            none = FocalLoss(gamma=gamma, alpha=alpha, reduction="none")(logits, target)
            assert none.shape == (30,) and none[~keep].eq(0).all()
            torch.testing.assert_close(none[keep].double(), per_sample, rtol=1e-4, atol=1e-6)
            total = FocalLoss(gamma=gamma, alpha=alpha, reduction="sum")(logits, target)
            torch.testing.assert_close(total.double(), per_sample.sum(), rtol=1e-4, atol=1e-6)
            mean = FocalLoss(gamma=gamma, alpha=alpha)(logits, target)
            torch.testing.assert_close(mean.double(), per_sample.sum() / alpha_y.sum(), rtol=1e-4, atol=1e-6)


def test_focal_gradients_match_cross_entropy_at_gamma_zero_and_pass_gradcheck():
    for seed in range(10):
        g = torch.Generator().manual_seed(seed)
        logits = torch.randn(12, 3, generator=g, requires_grad=True)
        target = torch.randint(0, 3, (12,), generator=g)
        (grad_fl,) = torch.autograd.grad(FocalLoss(gamma=0.0)(logits, target), logits)
        (grad_ce,) = torch.autograd.grad(F.cross_entropy(logits, target), logits)
        torch.testing.assert_close(grad_fl, grad_ce, rtol=1e-5, atol=1e-7)
    # float64 下用有限差分核对 gamma > 0 的解析梯度
    logits = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
    target = torch.randint(0, 4, (6,))
    alpha = torch.rand(4) + 0.5
    for gamma in (0.5, 2.0):
        loss_fn = FocalLoss(gamma=gamma, alpha=alpha)
        assert torch.autograd.gradcheck(lambda z: loss_fn(z, target), (logits,))


def test_focal_is_finite_for_extreme_logits_and_moves_with_device():
    logits = torch.tensor([[100.0, -100.0], [-100.0, 100.0], [0.0, 0.0]], requires_grad=True)
    target = torch.tensor([0, 1, 0])
    for gamma in (0.0, 0.5, 2.0):
        loss = FocalLoss(gamma=gamma, alpha=[1.0, 2.0])(logits, target)
        (grad,) = torch.autograd.grad(loss, logits)
        assert torch.isfinite(loss) and torch.isfinite(grad).all()
    # 容易样本（前两个）的梯度被压到 0，难样本的梯度不为 0
    loss = FocalLoss(gamma=2.0)(logits, target)
    (grad,) = torch.autograd.grad(loss, logits)
    assert grad[:2].abs().max() == 0 and grad[2].abs().max() > 0
    assert "alpha" in FocalLoss(alpha=[1.0, 2.0]).state_dict()


def test_focal_rejects_bad_arguments():
    with pytest.raises(ValueError, match="gamma"):
        FocalLoss(gamma=-1)
    with pytest.raises(ValueError, match="alpha"):
        FocalLoss(alpha=[1.0, 2.0])(torch.randn(3, 4), torch.tensor([0, 1, 2]))


# ---------------------------------------------------------------- 阈值


def brute_force(y, scores, metric):
    """把每个出现过的分数都当阈值试一遍，用 scikit-learn 打分。"""
    best = -np.inf
    for t in np.unique(scores):
        pred = (scores >= t).astype(int)
        if metric == "f1":
            value = f1_score(y, pred)
        elif metric == "macro_f1":
            value = f1_score(y, pred, average="macro", labels=[0, 1], zero_division=0)
        best = max(best, value)
    return best


def random_binary(seed, n=50):
    g = np.random.default_rng(seed)
    y = (g.random(n) < g.uniform(0.1, 0.5)).astype(int)
    y[:2] = [0, 1]  # 两类都出现
    # 正类分数偏高但有重叠；四舍五入制造同分
    scores = np.round(np.clip(g.normal(0.35 + 0.3 * y, 0.2), 0, 1), 2)
    return y, scores


@pytest.mark.parametrize("metric", ["f1", "macro_f1"])
def test_best_threshold_matches_brute_force_with_sklearn(metric):
    for seed in range(10):
        y, scores = random_binary(seed, n=30)
        t, value = best_threshold(y, scores, metric=metric)
        assert value == pytest.approx(brute_force(y, scores, metric), abs=1e-12)
        pred = apply_threshold(torch.as_tensor(scores), t).numpy()
        kwargs = {"average": "macro", "labels": [0, 1], "zero_division": 0} if metric == "macro_f1" else {}
        assert f1_score(y, pred, **kwargs) == pytest.approx(value, abs=1e-12)


def test_best_threshold_youden_matches_sklearn_roc_curve():
    for seed in range(40):
        y, scores = random_binary(seed, n=80)
        t, value = best_threshold(torch.as_tensor(y), torch.as_tensor(scores), metric="youden")
        fpr, tpr, _ = roc_curve(y, scores)
        assert value == pytest.approx(np.max(tpr - fpr), abs=1e-12)
        pred = (scores >= t).astype(int)
        tpr_t = pred[y == 1].mean()
        fpr_t = pred[y == 0].mean()
        assert tpr_t - fpr_t == pytest.approx(value, abs=1e-12)


def test_best_threshold_beats_the_default_half_on_shifted_scores():
    # 分数整体偏低（少数类常见），0.5 几乎一个正类也判不出，选出的阈值要好得多
    for seed in range(10):
        y, scores = random_binary(seed, n=200)
        scores = scores * 0.5
        t, value = best_threshold(y, scores)
        assert value >= f1_score(y, (scores >= 0.5).astype(int), zero_division=0)
        assert t < 0.5


def test_best_threshold_rejects_single_class_and_2d_scores():
    with pytest.raises(ValueError, match="既有 0 也有 1"):
        best_threshold([1, 1, 1], [0.2, 0.3, 0.4])
    with pytest.raises(ValueError, match="softmax"):
        best_threshold([0, 1], torch.rand(2, 2))
    with pytest.raises(ValueError, match="metric"):
        best_threshold([0, 1], [0.1, 0.9], metric="auc")


def test_apply_threshold_keeps_device_and_dtype():
    scores = torch.rand(100)
    for t in (0.0, 0.3, 0.5, 1.0):
        pred = apply_threshold(scores, t)
        assert pred.dtype == torch.long and pred.device == scores.device
        assert torch.equal(pred.bool(), scores >= t)


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else []) + (
    ["mps"] if torch.backends.mps.is_available() else []
)


@pytest.mark.parametrize("dev", DEVICES)
def test_focal_runs_on_the_logits_device_with_alpha_left_on_cpu(dev):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(16, 3, generator=g).to(dev)
    target = torch.randint(0, 3, (16,), generator=g).to(dev)
    alpha = torch.rand(3, generator=g) + 0.5  # 留在 CPU 上：FocalLoss 自己搬到 logits 所在设备
    got = FocalLoss(gamma=0.0, alpha=alpha)(logits, target)
    expected = F.cross_entropy(logits, target, weight=alpha.to(dev))
    assert got.device.type == dev
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
