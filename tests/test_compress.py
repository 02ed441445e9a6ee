"""compress：剪枝达到要求的稀疏度且与手工置零一致，量化模型能跑、输出接近、文件更小，蒸馏损失对照手算。"""

import copy
import doctest
import random
import statistics

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import aigc_lib.compress as compress
from aigc_lib.compress import (
    count_parameters,
    distillation_loss,
    magnitude_prune,
    make_permanent,
    measure_latency,
    model_size_bytes,
    quantize_dynamic_int8,
    sparsity,
)


class LSTMClassifier(nn.Module):
    """第 05 章那种小分类器：嵌入 -> LSTM -> 线性层。"""

    def __init__(self, vocab=50, emb=16, hidden=32, classes=2):
        super().__init__()
        self.embed = nn.Embedding(vocab, emb)
        self.rnn = nn.LSTM(emb, hidden, batch_first=True, bidirectional=True)
        self.head = nn.Linear(2 * hidden, classes)

    def forward(self, tokens):  # (B, T)
        out, _ = self.rnn(self.embed(tokens))  # (B, T, 2H)
        return self.head(out.mean(dim=1))  # (B, classes)


class ConvNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(8, 12, kernel_size=3)
        self.gru = nn.GRU(12, 10, batch_first=True)
        self.fc = nn.Linear(10, 3)

    def forward(self, x):  # (B, 8, T)
        h = self.conv(x).transpose(1, 2)  # (B, T-2, 12)
        out, _ = self.gru(h)
        return self.fc(out[:, -1])  # (B, 3)


def mlp():
    return nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 4))


MODELS = {
    "mlp": (mlp, lambda g: torch.randn(5, 64, generator=g)),
    "lstm": (LSTMClassifier, lambda g: torch.randint(0, 50, (5, 7), generator=g)),
    "conv_gru": (ConvNet, lambda g: torch.randn(5, 8, 9, generator=g)),
}


def weight_tensors(model):
    """参照实现：手工列出应被剪的权重（Linear/Conv 的 weight，RNN 的 weight_*）。"""
    found = []
    for name, module in model.named_modules():
        if isinstance(module, (nn.Linear, nn.Conv1d)):
            found.append((f"{name}.weight", module.weight))
        elif isinstance(module, nn.RNNBase):
            found += [(f"{name}.{n}", p) for n, p in module.named_parameters() if n.startswith("weight_")]
    return found


def test_docstring_examples_run():
    assert doctest.testmod(compress, extraglobs={"torch": torch, "nn": nn}).failed == 0


# ---------------------------------------------------------------- 剪枝


@pytest.mark.parametrize("name", list(MODELS))
def test_unstructured_pruning_zeroes_exactly_the_globally_smallest_weights(name):
    build, make_input = MODELS[name]
    for seed, amount in enumerate((0.1, 0.3, 0.5, 0.9)):
        torch.manual_seed(seed)
        model = build()
        reference = copy.deepcopy(model)
        # 参照：把所有选中权重的绝对值放在一起排序，最小的 k 个置 0
        weights = weight_tensors(reference)
        flat = torch.cat([p.detach().abs().reshape(-1) for _, p in weights])
        k = round(amount * flat.numel())
        cutoff = flat.kthvalue(k).values if k else -1.0
        with torch.no_grad():
            for _, p in weights:
                p[p.abs() <= cutoff] = 0

        magnitude_prune(model, amount)
        report = sparsity(model)
        assert report["prunable"] == pytest.approx(k / flat.numel(), abs=1e-12)
        for full_name, p in weights:
            assert report["per_tensor"][full_name] == pytest.approx((p == 0).float().mean().item())

        x = make_input(torch.Generator().manual_seed(seed))
        torch.testing.assert_close(model(x), reference(x))  # 剪过的模型照常运行，结果与手工置零相同


@pytest.mark.parametrize("dim", [0, 1])
@pytest.mark.parametrize("name", list(MODELS))
def test_structured_pruning_removes_the_slices_with_smallest_l1_norm(name, dim):
    """dim=0 剪整行（输出神经元），dim=1 剪整列（输入特征）：剪掉的正是 L1 范数最小的那些，其余原样不动。"""
    build, make_input = MODELS[name]
    for seed, amount in enumerate((0.25, 0.5, 0.75)):
        torch.manual_seed(seed)
        model = build()
        original = {n: p.detach().clone() for n, p in weight_tensors(model)}
        magnitude_prune(model, amount, structured=True, dim=dim)
        report = sparsity(model)
        pruned = total = 0
        for full_name, w in original.items():
            slices = w.transpose(0, dim).reshape(w.shape[dim], -1)  # (沿 dim 的个数, 其余)
            k = round(amount * slices.shape[0])
            expected_zero = torch.zeros(slices.shape[0], dtype=torch.bool)
            expected_zero[slices.abs().sum(1).argsort()[:k]] = True
            effective = dict(compress._effective_tensors(model))[full_name].transpose(0, dim).reshape(slices.shape)
            assert torch.equal(effective.eq(0).all(1), expected_zero), full_name
            assert torch.equal(effective[~expected_zero], slices[~expected_zero])
            assert report["per_tensor"][full_name] == pytest.approx(k / slices.shape[0])
            pruned, total = pruned + k * slices.shape[1], total + slices.numel()
        assert report["prunable"] == pytest.approx(pruned / total)
        out = model(make_input(torch.Generator().manual_seed(seed)))
        assert torch.isfinite(out).all()


@pytest.mark.parametrize("structured", [False, True])
def test_make_permanent_keeps_zeros_and_restores_plain_state_dict(structured):
    for name, (build, make_input) in MODELS.items():
        torch.manual_seed(1)
        model = build()
        keys_before = set(model.state_dict())
        magnitude_prune(model, 0.5, structured=structured)
        assert any(k.endswith("_mask") for k in model.state_dict())
        x = make_input(torch.Generator().manual_seed(1))
        before = model(x)
        report_before = sparsity(model)

        make_permanent(model)
        assert set(model.state_dict()) == keys_before
        assert not any(n.endswith("_orig") for n, _ in model.named_parameters())
        assert sparsity(model) == report_before
        torch.testing.assert_close(model(x), before)
        # 重新加载进一个没剪过的同类模型，结果一样
        fresh = build()
        fresh.load_state_dict(model.state_dict())
        torch.testing.assert_close(fresh(x), before)


def test_pruned_weights_stay_zero_while_training_until_made_permanent():
    """训练时前向用的权重在被剪的位置一直是 0；make_permanent 之后 0 还在，但继续训练就不再强制为 0。"""
    torch.manual_seed(0)
    model = mlp()
    magnitude_prune(model, 0.6)
    layers = [m for m in model if isinstance(m, nn.Linear)]
    masks = [layer.weight_mask.clone() for layer in layers]
    assert all(0 < (m == 0).float().mean() < 1 for m in masks)
    start = [layer.weight_orig.detach().clone() for layer in layers]

    def train(steps):
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        for _ in range(steps):
            loss = model(torch.randn(16, 64)).pow(2).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

    train(3)
    x = torch.randn(5, 64)
    out = model(x)  # 前向时钩子刷新 weight = weight_orig * weight_mask
    manual = x
    for module in model:  # 手工按 "原权重 × 掩码" 算一遍
        manual = (F.linear(manual, module.weight_orig * module.weight_mask, module.bias)
                  if isinstance(module, nn.Linear) else module(manual))
    torch.testing.assert_close(out, manual)
    for layer, mask, before in zip(layers, masks, start):
        assert torch.equal(layer.weight_mask, mask)
        assert layer.weight[mask == 0].eq(0).all()
        assert not torch.equal(layer.weight_orig[mask == 1], before[mask == 1])  # 没剪的位置确实在学
    assert sparsity(model)["prunable"] == pytest.approx(0.6, abs=1e-3)

    make_permanent(model)
    torch.testing.assert_close(model(x), out)
    zeros = [layer.weight.detach() == 0 for layer in layers]
    assert all(torch.equal(z, m == 0) for z, m in zip(zeros, masks))
    train(3)
    assert all(layer.weight[z].ne(0).any() for layer, z in zip(layers, zeros))  # 不再强制为 0


def test_pruned_transformer_trains_and_evaluates_with_fresh_weights():
    # 注意力层的 out_proj 和 eval 下的快速路径都不经过子模块自己的 forward，权重必须由外层刷新
    for seed, structured in ((0, False), (1, True)):
        torch.manual_seed(seed)
        layer = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True)
        model = nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False)
        magnitude_prune(model, 0.5, structured=structured)
        assert "layers.0.self_attn.in_proj_weight" in sparsity(model)["per_tensor"]
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        for _ in range(3):
            loss = model(torch.randn(2, 5, 16)).pow(2).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        assert sparsity(model)["prunable"] == pytest.approx(0.5, abs=0.01)
        model.eval()
        x = torch.randn(2, 5, 16)
        with torch.inference_mode():
            masked = model(x)
            permanent = make_permanent(copy.deepcopy(model))(x)
        torch.testing.assert_close(masked, permanent)


def test_repeated_pruning_prunes_the_remaining_weights():
    torch.manual_seed(0)
    model = mlp()
    magnitude_prune(model, 0.5)
    magnitude_prune(model, 0.5)
    assert sparsity(model)["prunable"] == pytest.approx(0.75, abs=1e-3)


def test_prune_rejects_bad_amount_and_models_without_prunable_layers():
    with pytest.raises(ValueError, match="amount"):
        magnitude_prune(mlp(), 1.0)
    with pytest.raises(ValueError, match="没有可剪的层"):
        magnitude_prune(nn.Sequential(nn.ReLU()), 0.5)


def test_sparsity_counts_zeros_in_every_parameter():
    model = mlp()
    with torch.no_grad():
        model[0].bias.zero_()
    report = sparsity(model)
    total = sum(p.numel() for p in model.parameters())
    assert report["total"] == total and report["zeros"] == 128
    assert report["overall"] == pytest.approx(128 / total)
    assert report["prunable"] == 0.0 and report["per_tensor"]["0.bias"] == 1.0


# ---------------------------------------------------------------- 量化


def is_quantized(module):
    # 动态量化层的类名仍是 Linear / LSTM，只能从所在的包区分
    return type(module).__module__.startswith("torch.ao.nn.quantized")


@pytest.mark.parametrize("name", ["mlp", "lstm"])
def test_quantized_model_runs_is_close_and_smaller(name):
    build, make_input = MODELS[name]
    for seed in range(3):
        torch.manual_seed(seed)
        model = build().eval()
        state = {k: v.clone() for k, v in model.state_dict().items()}
        q = quantize_dynamic_int8(model)
        assert any(is_quantized(m) for m in q.modules())
        for k, v in model.state_dict().items():  # 原模型没被改动
            assert torch.equal(v, state[k])
        x = make_input(torch.Generator().manual_seed(seed))
        with torch.no_grad():
            ref, out = model(x), q(x)
        assert out.shape == ref.shape
        # int8 有舍入误差：相对误差应在几个百分点以内，但不应为 0（确实量化了）
        rel = ((out - ref).norm() / ref.norm()).item()
        assert 0 < rel < 0.05, rel
        assert model_size_bytes(q) < 0.5 * model_size_bytes(model)


def test_quantize_a_bare_layer_and_reject_non_cpu_models():
    lstm = nn.LSTM(8, 16, batch_first=True)
    q = quantize_dynamic_int8(lstm)
    assert is_quantized(q)
    out, _ = q(torch.randn(2, 5, 8))
    assert out.shape == (2, 5, 16)
    with pytest.raises(RuntimeError, match="CPU"):
        quantize_dynamic_int8(nn.Linear(4, 4, device="meta"))


def test_quantize_a_pruned_model_only_after_make_permanent():
    # 剪枝后、训练过一步：weight 是连着计算图的现算张量，PyTorch 复制模型时报一句英文；我们先说清楚
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 2))
    magnitude_prune(model, 0.9)
    model(torch.randn(4, 16)).sum().backward()
    with pytest.raises(ValueError, match="make_permanent"):
        quantize_dynamic_int8(model)
    make_permanent(model)
    q = quantize_dynamic_int8(model)
    for layer, quantized in [(model[0], q[0]), (model[2], q[2])]:  # 剪掉的 0 在 int8 里仍是 0
        zeros = layer.weight == 0
        assert zeros.float().mean() > 0.85 and torch.all(quantized.weight().dequantize()[zeros] == 0)


# ---------------------------------------------------------------- 蒸馏


def test_distillation_is_zero_iff_student_equals_teacher():
    for seed in range(30):
        g = torch.Generator().manual_seed(seed)
        logits = torch.randn(8, 5, generator=g) * 3
        for T in (0.5, 1.0, 2.0, 4.0):
            assert distillation_loss(logits, logits.clone(), temperature=T, alpha=1.0).item() == 0.0
            other = logits + 0.1 * torch.randn(8, 5, generator=g)
            assert distillation_loss(other, logits, temperature=T, alpha=1.0).item() > 0


def test_distillation_equals_hand_computed_kl_mixed_with_cross_entropy():
    for seed in range(30):
        g = torch.Generator().manual_seed(seed)
        n, c = 6, int(torch.randint(2, 9, (1,), generator=g))
        s, t = torch.randn(n, c, generator=g), torch.randn(n, c, generator=g)
        y = torch.randint(0, c, (n,), generator=g)
        for T in (1.0, 2.0, 3.5):
            p_t = (t.double() / T).softmax(-1)
            p_s = (s.double() / T).softmax(-1)
            kl = (p_t * (p_t.log() - p_s.log())).sum(-1).mean() * T * T  # 每个样本的 KL 再平均
            ce = F.cross_entropy(s.double(), y)
            for alpha in (0.0, 0.3, 1.0):
                expected = alpha * kl + (1 - alpha) * ce
                got = distillation_loss(s, t, y if alpha < 1 else None, temperature=T, alpha=alpha)
                assert got.item() == pytest.approx(expected.item(), rel=1e-5, abs=1e-6)


def test_distillation_gradient_flows_to_student_only_and_matches_theory():
    for seed in range(10):
        g = torch.Generator().manual_seed(seed)
        s = torch.randn(4, 6, generator=g, dtype=torch.float64, requires_grad=True)
        t = torch.randn(4, 6, generator=g, dtype=torch.float64, requires_grad=True)
        T = 2.0
        distillation_loss(s, t, temperature=T, alpha=1.0).backward()
        assert t.grad is None
        # d/ds [T² KL(p_t || softmax(s/T))] 按样本平均 = T * (p_s - p_t) / N
        expected = T * ((s / T).softmax(-1) - (t / T).softmax(-1)) / 4
        torch.testing.assert_close(s.grad, expected.detach())


def test_distillation_flattens_sequences_and_checks_arguments():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(2, 5, 7, generator=g), torch.randn(2, 5, 7, generator=g)  # (B, T, C)
    y = torch.randint(0, 7, (2, 5), generator=g)
    flat = distillation_loss(s.reshape(-1, 7), t.reshape(-1, 7), y.reshape(-1))
    torch.testing.assert_close(distillation_loss(s, t, y), flat)
    with pytest.raises(ValueError, match="alpha=1.0"):
        distillation_loss(s, t)
    with pytest.raises(ValueError, match="形状"):
        distillation_loss(s, t[:, :3])
    with pytest.raises(ValueError, match="温度"):
        distillation_loss(s, t, y, temperature=0)


# ---------------------------------------------------------------- 大小、参数量、延迟


def test_model_size_equals_the_saved_file(tmp_path):
    for name, (build, _) in MODELS.items():
        model = build()
        # torch.save 把文件名写进 zip 里的目录名；写进内存时目录名是 "archive"
        path = tmp_path / "archive.pt"
        torch.save(model.state_dict(), path)
        assert model_size_bytes(model) == path.stat().st_size
        assert model_size_bytes(model) > 4 * count_parameters(model)  # float32 每个参数 4 字节，外加少量元数据


def test_count_parameters_matches_manual_sum_and_respects_frozen_layers():
    for name, (build, _) in MODELS.items():
        model = build()
        total = sum(p.numel() for p in model.parameters())
        assert count_parameters(model) == total == count_parameters(model, trainable_only=True)
        first = next(model.parameters())
        first.requires_grad_(False)
        assert count_parameters(model, trainable_only=True) == total - first.numel()
        assert count_parameters(model) == total
    assert count_parameters(nn.Linear(10, 3)) == 33


class CountingModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 2)
        self.calls, self.grad_enabled, self.modes = 0, [], []

    def forward(self, x, scale=1.0):
        self.calls += 1
        self.grad_enabled.append(torch.is_grad_enabled())
        self.modes.append(self.training)
        return self.fc(x) * scale


def test_measure_latency_calls_the_model_the_right_number_of_times_in_eval_mode():
    model = CountingModel().train()
    x = torch.randn(3, 4)
    for inputs in (x, (x, 2.0), {"x": x, "scale": 0.5}):
        model.calls = 0
        stats = measure_latency(model, inputs, repeats=7, warmup=2)
        assert model.calls == 9
        assert set(stats) == {"median_ms", "p90_ms", "repeats"} and stats["repeats"] == 7
        assert 0 < stats["median_ms"] <= stats["p90_ms"]
    assert not any(model.grad_enabled) and not any(model.modes)  # 推理模式、eval 状态
    assert model.training  # 测完恢复原状态
    with pytest.raises(ValueError, match="repeats"):
        measure_latency(model, x, repeats=0)


def test_measure_latency_reports_median_and_nearest_rank_p90(monkeypatch):
    """用假时钟：每次前向让时钟走一个已知的毫秒数，中位数与 statistics.median、p90 与 numpy 的
    nearest-rank 分位数（method="inverted_cdf"）对照；次数从 1 到 30。"""
    clock = {"now": 0.0, "i": 0, "durations": []}

    class FakeTime:
        @staticmethod
        def perf_counter():
            return clock["now"]

    class Ticking(nn.Module):
        def forward(self, x):
            clock["now"] += clock["durations"][clock["i"]] / 1000
            clock["i"] += 1
            return x

    monkeypatch.setattr(compress, "time", FakeTime)
    rng = random.Random(0)
    for repeats in list(range(1, 31)) * 3:
        warmup = rng.randint(0, 3)
        clock.update(i=0, durations=[rng.choice([rng.uniform(0.5, 20), float(rng.randint(1, 5))])
                                     for _ in range(warmup + repeats)])
        stats = measure_latency(Ticking(), torch.zeros(1), repeats=repeats, warmup=warmup)
        measured = clock["durations"][warmup:]  # 预热的几次不计入
        assert stats["repeats"] == repeats
        assert stats["median_ms"] == pytest.approx(statistics.median(measured))
        assert stats["p90_ms"] == pytest.approx(float(np.percentile(measured, 90, method="inverted_cdf")))


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else []) + (
    ["mps"] if torch.backends.mps.is_available() else []
)


@pytest.mark.parametrize("dev", DEVICES)
def test_prune_distill_and_time_on_every_device(dev):
    torch.manual_seed(0)
    model = LSTMClassifier().to(dev)
    x = torch.randint(0, 50, (4, 6), device=dev)
    magnitude_prune(model, 0.5)
    assert sparsity(model)["prunable"] == pytest.approx(0.5, abs=1e-3)
    before = model(x)
    make_permanent(model)
    torch.testing.assert_close(model(x), before)
    teacher = torch.randn_like(before)
    assert distillation_loss(teacher, teacher, alpha=1.0).item() == 0.0
    loss = distillation_loss(before, teacher, torch.zeros(4, dtype=torch.long, device=dev))
    assert loss.device.type == dev and torch.isfinite(loss)
    stats = measure_latency(model, x, repeats=3, warmup=1)
    assert 0 < stats["median_ms"] <= stats["p90_ms"]
    if dev != "cpu":
        with pytest.raises(RuntimeError, match="CPU"):
            quantize_dynamic_int8(model)
    else:
        q = quantize_dynamic_int8(model)
        assert q(x).shape == before.shape
