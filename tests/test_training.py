"""fit、History、学习率调度与检查点的测试：手写部分对照 PyTorch 自己的层、调度器和朴素训练循环。"""

import math
import random
import os
import subprocess
import sys
from dataclasses import fields

import pytest
import torch
from sklearn.metrics import accuracy_score, f1_score
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from aigc_lib.core.checkpoint import CheckpointMismatchError, load_checkpoint, save_checkpoint, unwrap_model
from aigc_lib.core.runtime import seed_everything
from aigc_lib.core.training import (
    FitOptions,
    History,
    NonFiniteLossError,
    evaluate,
    fit,
    move_to_device,
    steps_per_epoch,
    warmup_cosine,
    warmup_linear,
)


@pytest.fixture(autouse=True)
def one_thread():
    """小张量上多线程只有开销；单线程也让浮点求和顺序固定。"""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def blobs(seed, n=96, dim=6, classes=3):
    """可学习的玩具分类任务：标签由一个随机线性映射决定。"""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, dim, generator=g)
    y = (x @ torch.randn(dim, classes, generator=g)).argmax(1)
    return x, y


def mlp(dim=6, hidden=16, classes=3, dropout=0.0):
    return nn.Sequential(nn.Linear(dim, hidden), nn.Tanh(), nn.Dropout(dropout), nn.Linear(hidden, classes))


def weights(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same_weights(a, b, atol=0.0):
    assert a.keys() == b.keys()
    for key in a:
        if atol == 0.0:
            assert torch.equal(a[key], b[key]), key
        else:
            torch.testing.assert_close(a[key], b[key], atol=atol, rtol=0, msg=key)


# ---------------------------------------------------------------- 能学会、可复现


@pytest.mark.parametrize("seed", range(3))
def test_toy_task_loss_falls_well_below_start(seed):
    seed_everything(seed)
    x, y = blobs(seed, n=160)
    train = DataLoader(TensorDataset(x[:128], y[:128]), batch_size=16, shuffle=True)
    val = DataLoader(TensorDataset(x[128:], y[128:]), batch_size=16)
    model = mlp()
    start = evaluate(model, train, nn.CrossEntropyLoss())["loss"]
    history = fit(model, train, val, epochs=12, optimizer=torch.optim.Adam(model.parameters(), lr=0.03),
                  loss_fn=nn.CrossEntropyLoss(), progress=False)
    assert history["train_loss"][-1] < 0.4 * start
    assert history["val_loss"][-1] < 0.6 * start
    assert len(history) == 12 and history["epoch"] == list(range(1, 13))


@pytest.mark.parametrize("seed", range(3))
def test_bf16_autocast_on_cpu_runs_and_learns(seed):
    seed_everything(seed)
    x, y = blobs(seed, n=128)
    loader = DataLoader(TensorDataset(x, y), batch_size=16, shuffle=True)
    model = mlp()
    seen = set()
    model[0].register_forward_hook(lambda mod, inp, out: seen.add(out.dtype))
    start = evaluate(model, loader)["loss"]
    seen.clear()
    history = fit(model, loader, epochs=10, optimizer=torch.optim.Adam(model.parameters(), lr=0.03),
                  amp="bf16", progress=False)
    assert seen == {torch.bfloat16}  # 前向确实在 bf16 autocast 下运行
    assert history["train_loss"][-1] < 0.5 * start
    assert all(p.dtype == torch.float32 for p in model.parameters())  # 参数仍是 fp32


def test_identical_seeds_give_identical_weights_and_different_seeds_do_not():
    def run(seed):
        seed_everything(seed)
        x, y = blobs(0)
        loader = DataLoader(TensorDataset(x, y), batch_size=8, shuffle=True)
        model = mlp(dropout=0.3)
        fit(model, loader, epochs=2, optimizer=torch.optim.AdamW(model.parameters(), lr=1e-2), progress=False)
        return weights(model)

    first = run(7)
    assert_same_weights(first, run(7))
    with pytest.raises(AssertionError):
        assert_same_weights(first, run(8))


# ---------------------------------------------------------------- 梯度累积、裁剪、调度


def bare_loop(model, loader, optimizer, scheduler, epochs, clip):
    """参照：最朴素的 PyTorch 训练循环。"""
    for _ in range(epochs):
        for xb, yb in loader:
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(xb), yb).backward()
            if clip is not None:
                nn.utils.clip_grad_norm_(model.parameters(), clip)
            optimizer.step()
            scheduler.step()


@pytest.mark.parametrize("seed", range(6))
def test_accumulating_k_micro_batches_equals_one_k_times_larger_batch(seed):
    rng = random.Random(seed)
    k, micro = rng.choice([2, 3, 4]), rng.choice([2, 4, 5])
    n_micro = k * rng.randint(2, 4) + rng.randint(1, k - 1)  # 最后一组凑不满 k 批
    x, y = blobs(seed, n=n_micro * micro)
    clip = rng.choice([None, 0.5])
    momentum = rng.choice([0.0, 0.9])
    factors = [rng.uniform(0.2, 1.0) for _ in range(100)]

    def build():
        torch.manual_seed(seed)
        model = mlp()
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=momentum)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: factors[s])
        return model, opt, sched

    big_model, big_opt, big_sched = build()
    bare_loop(big_model, DataLoader(TensorDataset(x, y), batch_size=k * micro), big_opt, big_sched, 2, clip)

    model, opt, sched = build()
    small = DataLoader(TensorDataset(x, y), batch_size=micro)
    fit(model, small, epochs=2, optimizer=opt, scheduler=sched, loss_fn=nn.CrossEntropyLoss(),
        accumulate=k, clip_grad_norm=clip, progress=False)
    assert sched.last_epoch == big_sched.last_epoch == 2 * math.ceil(n_micro / k)  # 每个优化步调一次
    assert steps_per_epoch(small, accumulate=k) == math.ceil(n_micro / k)
    assert_same_weights(weights(model), weights(big_model), atol=1e-6)


@pytest.mark.parametrize("seed", range(3))
def test_fit_matches_a_bare_pytorch_loop_with_clipping(seed):
    x, y = blobs(seed)

    def build():
        torch.manual_seed(seed)
        model = mlp()
        opt = torch.optim.AdamW(model.parameters(), lr=0.05)
        return model, opt, warmup_cosine(opt, 3, 20)

    ref, ref_opt, ref_sched = build()
    bare_loop(ref, DataLoader(TensorDataset(x, y), batch_size=10), ref_opt, ref_sched, 2, 0.3)
    model, opt, sched = build()
    fit(model, DataLoader(TensorDataset(x, y), batch_size=10), epochs=2, optimizer=opt, scheduler=sched,
        clip_grad_norm=0.3, progress=False)
    assert_same_weights(weights(model), weights(ref), atol=1e-6)


def test_reduce_on_plateau_is_stepped_once_per_epoch_with_the_monitored_value(tmp_path):
    class Recording(torch.optim.lr_scheduler.ReduceLROnPlateau):
        def step(self, metrics):
            seen.append(metrics)
            super().step(metrics)

    seen = []
    x, y = blobs(0, n=32)
    loader = DataLoader(TensorDataset(x, y), batch_size=8)
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    # resume=True 但还没有 last.pt：从头开始训练
    history = fit(model, loader, loader, epochs=3, optimizer=opt, scheduler=Recording(opt), progress=False,
                  checkpoint_dir=tmp_path, resume=True)
    assert seen == history["val_loss"]


def lrs(scheduler, steps):
    out = []
    for _ in range(steps):
        out.append(scheduler.get_last_lr()[0])
        scheduler.optimizer.step()
        scheduler.step()
    return out


def one_param_opt(lr):
    return torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=lr)


@pytest.mark.parametrize("seed", range(8))
def test_schedule_helpers_match_torch_schedulers(seed):
    rng = random.Random(seed)
    lr, warmup = rng.uniform(1e-4, 1.0), rng.randint(2, 20)
    total, ratio = warmup + rng.randint(5, 60), rng.choice([0.0, rng.uniform(0.0, 0.5)])
    steps = total + 5  # 也看看超过 total 之后保持在最低值

    ours = lrs(warmup_cosine(one_param_opt(lr), warmup, total, ratio), steps)
    opt = one_param_opt(lr)
    reference = torch.optim.lr_scheduler.SequentialLR(opt, [
        torch.optim.lr_scheduler.LinearLR(opt, start_factor=1 / warmup, end_factor=1.0, total_iters=warmup - 1),
        torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total - warmup, eta_min=ratio * lr),
    ], milestones=[warmup])
    expected = lrs(reference, total) + [ratio * lr] * 5
    torch.testing.assert_close(torch.tensor(ours), torch.tensor(expected), rtol=1e-5, atol=1e-9)

    ours = lrs(warmup_linear(one_param_opt(lr), warmup, total, ratio), steps)
    opt = one_param_opt(lr)
    reference = torch.optim.lr_scheduler.SequentialLR(opt, [
        torch.optim.lr_scheduler.LinearLR(opt, start_factor=1 / warmup, end_factor=1.0, total_iters=warmup - 1),
        torch.optim.lr_scheduler.LinearLR(opt, start_factor=1.0, end_factor=ratio, total_iters=total - warmup),
    ], milestones=[warmup])
    expected = lrs(reference, total) + [ratio * lr] * 5
    torch.testing.assert_close(torch.tensor(ours), torch.tensor(expected), rtol=1e-5, atol=1e-9)


def test_schedule_without_warmup_is_plain_cosine_and_bad_arguments_are_explained():
    ours = lrs(warmup_cosine(one_param_opt(0.3), 0, 17), 17)
    opt = one_param_opt(0.3)
    expected = lrs(torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=17), 17)
    torch.testing.assert_close(torch.tensor(ours), torch.tensor(expected), rtol=1e-5, atol=1e-9)
    with pytest.raises(ValueError, match="warmup_steps"):
        warmup_cosine(one_param_opt(0.1), 50, 10)
    with pytest.raises(ValueError, match="min_lr_ratio"):
        warmup_linear(one_param_opt(0.1), 1, 10, min_lr_ratio=2.0)


# ---------------------------------------------------------------- 验证损失与指标


class TinyTagger(nn.Module):
    """(B, T) 词号 -> (B, T, C) logits：检验逐位置的指标和填充位置。"""

    def __init__(self, vocab=20, classes=4):
        super().__init__()
        self.embed, self.out = nn.Embedding(vocab, 8), nn.Linear(8, classes)

    def forward(self, tokens):
        return self.out(self.embed(tokens))


@pytest.mark.parametrize("seed", range(4))
def test_val_loss_and_metrics_cover_the_whole_validation_set(seed):
    rng = random.Random(seed)
    torch.manual_seed(seed)
    n, t = rng.randint(20, 40), rng.randint(3, 7)
    tokens, tags = torch.randint(0, 20, (n, t)), torch.randint(0, 4, (n, t))
    tags[torch.rand(n, t) < 0.3] = -100  # 填充位置
    val = DataLoader(TensorDataset(tokens, tags), batch_size=rng.randint(3, 9))  # 最后一批更小
    model = TinyTagger()
    macro_f1 = lambda yt, yp: f1_score(yt, yp, average="macro")  # noqa: E731
    history = fit(model, DataLoader(TensorDataset(tokens, tags), batch_size=8), val, epochs=1,
                  optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                  metrics={"acc": accuracy_score, "f1": macro_f1}, progress=False)

    with torch.no_grad():
        logits = model(tokens)
    keep = tags != -100
    y_true, y_pred = tags[keep].numpy(), logits.argmax(-1)[keep].numpy()
    record = history.records[-1]
    assert record["val_acc"] == pytest.approx(accuracy_score(y_true, y_pred))
    assert record["val_f1"] == pytest.approx(f1_score(y_true, y_pred, average="macro"))
    # 每批的损失是“本批有效位置”的平均；逐批复算，按每批序列数加权
    expected, count = 0.0, 0
    for xb, yb in val:
        expected += nn.functional.cross_entropy(model(xb).reshape(-1, 4), yb.reshape(-1)).item() * len(yb)
        count += len(yb)
    assert record["val_loss"] == pytest.approx(expected / count, rel=1e-5)


@pytest.mark.parametrize("seed", range(3))
def test_val_loss_is_item_weighted_mean_over_uneven_batches(seed):
    rng = random.Random(seed)
    x, y = blobs(seed, n=rng.randint(30, 60))
    torch.manual_seed(seed)
    model = mlp()
    val = DataLoader(TensorDataset(x, y), batch_size=rng.randint(4, 11))
    result = evaluate(model, val, nn.CrossEntropyLoss(), metrics={"acc": accuracy_score})
    with torch.no_grad():
        logits = model(x)
    assert result["loss"] == pytest.approx(nn.functional.cross_entropy(logits, y).item(), rel=1e-5)
    assert result["acc"] == pytest.approx(accuracy_score(y.numpy(), logits.argmax(1).numpy()))


def test_step_hook_and_custom_predict_for_a_binary_model():
    torch.manual_seed(0)
    x = torch.randn(64, 5)
    y = (x.sum(1) > 0).float()
    model = nn.Linear(5, 1)
    calls = []

    def step(m, batch):  # 只返回损失也可以，但要算指标就返回 (loss, outputs, target)
        xb, yb = batch
        assert m is model  # step 拿到的就是传给 fit 的那个模型，不是任何包装
        calls.append(xb.device)
        logits = m(xb).squeeze(1)
        return nn.functional.binary_cross_entropy_with_logits(logits, yb), logits, yb

    loader = DataLoader(TensorDataset(x, y), batch_size=16)
    history = fit(model, loader, loader, epochs=8, optimizer=torch.optim.SGD(model.parameters(), lr=0.5),
                  step=step, metrics={"acc": accuracy_score}, predict=lambda logits: (logits > 0).float(),
                  monitor="acc", progress=False)
    with torch.no_grad():
        expected = accuracy_score(y.numpy(), (model(x).squeeze(1) > 0).float().numpy())
    assert history["val_acc"][-1] == pytest.approx(expected) and expected > 0.9
    assert len(calls) == 8 * 4 * 2  # 训练 + 验证，每批一次


def test_move_to_device_handles_nested_batches():
    from collections import namedtuple

    Pair = namedtuple("Pair", "a b")
    batch = {"x": [torch.ones(2), (torch.zeros(1), "text")], "y": Pair(torch.ones(1), 3)}
    moved = move_to_device(batch, torch.device("cpu"))
    assert isinstance(moved["y"], Pair) and moved["y"].b == 3 and moved["x"][1][1] == "text"
    assert torch.equal(moved["x"][0], torch.ones(2))


# ---------------------------------------------------------------- 早停


def first_stop(values, patience):
    """参照：第 e 轮停下，当且仅当前 e 轮里的最好值（最早出现的那个）在第 e - patience 轮或更早。

    返回 (训练了几轮, 最好的一轮, 是否提前停止)。
    """
    for e in range(1, len(values) + 1):
        best_epoch = max(range(e), key=lambda i: (values[i], -i)) + 1
        if e - best_epoch >= patience:
            return e, best_epoch, True
    return len(values), best_epoch, False


@pytest.mark.parametrize("seed", range(6))
def test_early_stopping_on_a_metric_and_restore_best(seed):
    rng = random.Random(seed)
    scores = [round(rng.uniform(0, 1), 2) for _ in range(10)]
    patience = rng.randint(1, 3)
    x, y = blobs(seed, n=24)
    torch.manual_seed(seed)
    model = mlp()
    snapshots = []

    def scripted_score(y_true, y_pred):  # 每轮验证结束时调用一次；顺便记下这一轮的权重
        snapshots.append(weights(model))
        return scores[len(snapshots) - 1]

    loader = DataLoader(TensorDataset(x, y), batch_size=8)
    history = fit(model, loader, loader, epochs=10, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                  metrics={"score": scripted_score}, monitor="val_score", patience=patience,
                  restore_best=True, progress=False)
    stop, best, stopped = first_stop(scores, patience)
    assert len(history) == stop
    assert history.stop_reason == ("early_stopping" if stopped else None)
    assert history.best("val_score")["epoch"] == best
    assert_same_weights(weights(model), snapshots[best - 1])


def test_monitor_names_are_checked_and_mode_is_inferred():
    x, y = blobs(0, n=16)
    loader = DataLoader(TensorDataset(x, y), batch_size=8)
    model = mlp()
    with pytest.raises(ValueError, match="val_loss"):
        fit(model, loader, loader, epochs=1, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
            monitor="val_f1", progress=False)
    h = History([{"epoch": 1, "val_loss": 0.5, "val_ppl": 9.0, "val_acc": 0.1},
                 {"epoch": 2, "val_loss": 0.7, "val_ppl": 7.0, "val_acc": 0.3}])
    assert h.best("val_loss")["epoch"] == 1 and h.best("val_acc")["epoch"] == 2
    assert h.best("val_ppl")["epoch"] == 2 and h.best("val_acc", mode="min")["epoch"] == 1
    assert History.from_dict(h.to_dict()).records == h.records


# ---------------------------------------------------------------- 故障：NaN、Ctrl-C


@pytest.mark.parametrize("log_every", [1, 3, 50])
def test_nan_loss_raises_an_error_naming_epoch_and_batch(log_every):
    for bad_call in (2, 7, 12):
        x, y = blobs(bad_call, n=40)
        torch.manual_seed(0)
        model = mlp()
        calls = []

        def loss_fn(outputs, target):
            calls.append(1)
            loss = nn.functional.cross_entropy(outputs, target)
            return loss * float("nan") if len(calls) == bad_call else loss

        loader = DataLoader(TensorDataset(x, y), batch_size=8)  # 每轮 5 批
        with pytest.raises(NonFiniteLossError) as info:
            fit(model, loader, epochs=4, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                loss_fn=loss_fn, log_every=log_every, progress=False)
        epoch, batch = (bad_call - 1) // 5 + 1, (bad_call - 1) % 5 + 1
        message = str(info.value)
        assert f"第 {epoch} 轮第 {batch} 批" in message
        assert "学习率" in message and "clip_grad_norm" in message and "amp='off'" in message
        if log_every == 1:  # 每批都检查时，NaN 还没来得及进入权重
            assert all(torch.isfinite(p).all() for p in model.parameters())


class Interrupter:
    """一个 step：训练（或验证）中第 at 次调用时模拟 Ctrl-C；at=0 表示不打断。"""

    def __init__(self, at, phase="train"):
        self.at, self.phase, self.calls = at, phase, 0

    def __call__(self, model, batch):
        if model.training == (self.phase == "train"):
            self.calls += 1
            if self.calls == self.at:
                raise KeyboardInterrupt
        xb, yb = batch
        return nn.functional.cross_entropy(model(xb), yb)


@pytest.mark.parametrize("hint", [None, "aigc train --resume runs/x"])
def test_an_interruption_says_how_to_resume(tmp_path, capsys, hint):
    """Ctrl-C 时的那一行：默认指向 Python 的 fit(..., resume=...)，aigc train 传自己的命令。"""
    model, loader, val, opt, _ = resumable_setup(0, 0.0, False)
    history = fit(model, loader, val, epochs=3, optimizer=opt, step=Interrupter(at=3), checkpoint_dir=tmp_path,
                  resume_hint=hint, progress=True)
    out = capsys.readouterr().out
    assert history.stop_reason == "interrupted"
    expected = hint or f"fit(..., resume={str(tmp_path / 'last.pt')!r})"
    assert f"已保存到 {tmp_path / 'last.pt'}；用 {expected} 从这里继续" in out
    assert (hint is None) == ("fit(..., resume=" in out)


def resumable_setup(seed, dropout, generator):
    """同一份数据；seed 只决定初始化和随机数状态（续训时故意换一个，检验一切都从检查点恢复）。"""
    seed_everything(seed)
    x, y = blobs(0, n=60)
    gen = torch.Generator().manual_seed(seed + 100) if generator else None
    loader = DataLoader(TensorDataset(x, y), batch_size=8, shuffle=True, generator=gen)
    val = DataLoader(TensorDataset(x[:20], y[:20]), batch_size=8)
    model = mlp(dropout=dropout)
    opt = torch.optim.AdamW(model.parameters(), lr=0.02)
    sched = warmup_cosine(opt, 4, 4 * steps_per_epoch(loader))
    return model, loader, val, opt, sched


@pytest.mark.parametrize("accumulate,generator", [(1, False), (2, True)])
def test_resume_after_epoch_k_equals_an_uninterrupted_run(tmp_path, accumulate, generator):
    kw = dict(accumulate=accumulate, progress=False)
    model, loader, val, opt, sched = resumable_setup(3, 0.2, generator)
    full = fit(model, loader, val, epochs=4, optimizer=opt, scheduler=sched, **kw)
    expected = weights(model)

    model, loader, val, opt, sched = resumable_setup(3, 0.2, generator)
    fit(model, loader, val, epochs=2, optimizer=opt, scheduler=sched, checkpoint_dir=tmp_path, **kw)
    # 新的进程里：模型、优化器重建，随机数状态被打乱——续训必须全部从检查点恢复
    model, loader, val, opt, sched = resumable_setup(99, 0.2, generator)
    torch.manual_seed(12345)
    resumed = fit(model, loader, val, epochs=4, optimizer=opt, scheduler=sched, resume=tmp_path / "last.pt",
                  checkpoint_dir=tmp_path, **kw)
    assert_same_weights(weights(model), expected)
    assert resumed["train_loss"] == full["train_loss"] and resumed["val_loss"] == full["val_loss"]
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 4


@pytest.mark.parametrize("at,accumulate,dropout", [(11, 1, 0.3), (12, 2, 0.0), (3, 1, 0.0)])
def test_ctrl_c_saves_last_checkpoint_and_resume_continues_the_same_batch(tmp_path, capsys, at, accumulate, dropout):
    kw = dict(accumulate=accumulate, progress=True)
    model, loader, val, opt, sched = resumable_setup(5, dropout, True)
    fit(model, loader, val, epochs=3, optimizer=opt, scheduler=sched, step=Interrupter(0), **kw)
    expected = weights(model)

    model, loader, val, opt, sched = resumable_setup(5, dropout, True)
    history = fit(model, loader, val, epochs=3, optimizer=opt, scheduler=sched, step=Interrupter(at),
                  checkpoint_dir=tmp_path, **kw)
    assert history.stop_reason == "interrupted"
    assert len(history) == (at - 1) // len(loader)  # 只含完整结束的轮次
    assert "中断" in capsys.readouterr().out
    saved = load_checkpoint(tmp_path / "last.pt")
    assert saved["partial"]["batch"] == (at - 1) % len(loader) // accumulate * accumulate

    model, loader, val, opt, sched = resumable_setup(77, dropout, True)
    fit(model, loader, val, epochs=3, optimizer=opt, scheduler=sched, step=Interrupter(0),
        checkpoint_dir=tmp_path, resume=True, **kw)
    assert_same_weights(weights(model), expected)


def test_ctrl_c_during_validation_resumes_with_that_validation(tmp_path):
    model, loader, val, opt, sched = resumable_setup(2, 0.3, False)
    full = fit(model, loader, val, epochs=3, optimizer=opt, scheduler=sched, progress=False)
    expected = weights(model)
    model, loader, val, opt, sched = resumable_setup(2, 0.3, False)
    history = fit(model, loader, val, epochs=3, optimizer=opt, scheduler=sched, step=Interrupter(5, "val"),
                  checkpoint_dir=tmp_path, progress=False)  # 第 2 轮验证的第 2 批
    assert len(history) == 1 and load_checkpoint(tmp_path / "last.pt")["partial"]["batch"] == len(loader)
    model, loader, val, opt, sched = resumable_setup(0, 0.3, False)
    resumed = fit(model, loader, val, epochs=3, optimizer=opt, scheduler=sched, checkpoint_dir=tmp_path,
                  resume=True, progress=False)
    assert_same_weights(weights(model), expected)
    assert resumed["val_loss"] == full["val_loss"]
    assert resumed["train_loss"] == pytest.approx(full["train_loss"], rel=1e-6)


def test_ctrl_c_without_checkpoint_dir_returns_history_so_far():
    model, loader, val, opt, sched = resumable_setup(1, 0.0, False)
    history = fit(model, loader, val, epochs=5, optimizer=opt, step=Interrupter(2 * len(loader) + 3),
                  progress=False)
    assert len(history) == 2 and history.stop_reason == "interrupted"


# ---------------------------------------------------------------- 检查点


@pytest.mark.parametrize("seed", range(5))
def test_mismatched_checkpoint_lists_missing_unexpected_and_reshaped_keys(tmp_path, seed):
    rng = random.Random(seed)

    def random_mlp(sizes):
        layers = [nn.Linear(a, b) for a, b in zip(sizes, sizes[1:])]
        return nn.Sequential(*layers)

    saved_sizes = [rng.randint(2, 6) for _ in range(rng.randint(3, 5))]
    other_sizes = list(saved_sizes)
    other_sizes[rng.randrange(1, len(other_sizes))] += 1  # 某一层变宽
    other_sizes = other_sizes[: rng.randint(2, len(other_sizes))] + [3] * rng.randint(0, 2)  # 层数也变
    saved, other = random_mlp(saved_sizes), random_mlp(other_sizes)
    save_checkpoint(tmp_path / "m.pt", saved, epoch=1, config={"sizes": saved_sizes})

    a, b = saved.state_dict(), other.state_dict()
    missing, unexpected = set(b) - set(a), set(a) - set(b)
    reshaped = {k for k in set(a) & set(b) if a[k].shape != b[k].shape}
    if not (missing or unexpected or reshaped):
        load_checkpoint(tmp_path / "m.pt", other)
        return
    with pytest.raises(CheckpointMismatchError) as info:
        load_checkpoint(tmp_path / "m.pt", other)
    message = str(info.value)
    for key in missing | unexpected | reshaped:
        assert key in message
    for key in reshaped:
        assert f"{key} 检查点 {list(a[key].shape)} ≠ 模型 {list(b[key].shape)}" in message
    assert ("模型需要、检查点里没有" in message) == bool(missing)
    assert ("检查点里有、模型没有" in message) == bool(unexpected)
    assert str(saved_sizes) in message  # 提示重建模型用的 config


def test_checkpoint_round_trip_with_wrapped_model_and_weights_only(tmp_path):
    torch.manual_seed(0)
    model = mlp()
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    sched = warmup_cosine(opt, 2, 10)
    x, y = blobs(0, n=16)
    fit(model, DataLoader(TensorDataset(x, y), batch_size=8), epochs=1, optimizer=opt, scheduler=sched,
        progress=False)
    wrapped = nn.DataParallel(model)  # 存的键不能带 "module." 前缀
    history = History([{"epoch": 1, "train_loss": 1.5}])
    save_checkpoint(tmp_path / "c.pt", wrapped, opt, sched, epoch=1, history=history, config={"hidden": 16})
    raw = torch.load(tmp_path / "c.pt", weights_only=True)
    assert not any(k.startswith("module.") for k in raw["model"])

    fresh = mlp()
    fresh_opt = torch.optim.Adam(fresh.parameters(), lr=0.01)
    fresh_sched = warmup_cosine(fresh_opt, 2, 10)
    ckpt = load_checkpoint(tmp_path / "c.pt", fresh, fresh_opt, fresh_sched)
    assert_same_weights(weights(fresh), weights(model))
    assert fresh_sched.state_dict()["last_epoch"] == sched.state_dict()["last_epoch"]
    assert History.from_dict(ckpt["history"]).records == history.records and ckpt["config"] == {"hidden": 16}
    # 别人用 DDP 存的纯 state_dict（键带 module.）也能加载
    torch.save({"module." + k: v for k, v in model.state_dict().items()}, tmp_path / "ddp.pt")
    load_checkpoint(tmp_path / "ddp.pt", fresh)
    assert unwrap_model(wrapped) is model
    with pytest.raises(FileNotFoundError, match="找不到检查点"):
        load_checkpoint(tmp_path / "missing.pt")


def test_fit_keeps_best_and_last_checkpoints(tmp_path):
    torch.manual_seed(0)
    x, y = blobs(0, n=48)
    loader = DataLoader(TensorDataset(x, y), batch_size=8)
    model = mlp()
    history = fit(model, loader, loader, epochs=4, optimizer=torch.optim.SGD(model.parameters(), lr=0.2),
                  checkpoint_dir=tmp_path, config={"hidden": 16}, progress=False)
    best, last = load_checkpoint(tmp_path / "best.pt"), load_checkpoint(tmp_path / "last.pt")
    assert best["epoch"] == history.best("val_loss")["epoch"] and last["epoch"] == 4
    assert last["config"] == {"hidden": 16} and History.from_dict(last["history"]).records == history.records
    assert_same_weights(last["model"], weights(model))
    with pytest.raises(CheckpointMismatchError, match="形状不同"):
        bigger = mlp(hidden=32)
        fit(bigger, loader, epochs=5, optimizer=torch.optim.SGD(bigger.parameters(), lr=0.1), resume=tmp_path,
            progress=False)


def test_compiled_model_saves_plain_keys(tmp_path):
    torch.manual_seed(0)
    x, y = blobs(0, n=16)
    model = mlp()
    fit(model, DataLoader(TensorDataset(x, y), batch_size=8), epochs=1, compile={"backend": "eager"},
        optimizer=torch.optim.SGD(model.parameters(), lr=0.1), checkpoint_dir=tmp_path, progress=False)
    keys = load_checkpoint(tmp_path / "last.pt")["model"].keys()
    assert keys == model.state_dict().keys()


_NO_COMPILER = """
import torch
from torch.utils.data import DataLoader, TensorDataset
from aigc_lib import compile_problem, fit
problem = compile_problem("cpu")
print(problem)
loader = DataLoader(TensorDataset(torch.randn(8, 3), torch.randint(0, 2, (8,))), batch_size=4)
model = torch.nn.Linear(3, 2)
sgd = torch.optim.SGD(model.parameters(), lr=0.1)
fit(model, loader, epochs=1, optimizer=sgd, compile={"backend": "eager"}, progress=False)  # eager 后端不用编译器
print("eager 后端照常训练")
try:
    fit(model, loader, epochs=1, optimizer=sgd, compile=True, progress=False)
except RuntimeError as error:
    print("fit:", str(error) == problem)
"""


def test_compile_without_a_cpp_compiler_says_so_before_training(tmp_path):
    """没有可用的 C++ 编译器（这里用 CXX 指向一个不存在的程序来模拟）：fit(compile=True) 在训练开始前报中文错误，
    不等到第一步时 Inductor 抛出一长串英文；不需要编译器的 eager 后端照常训练。"""
    script = tmp_path / "no_compiler.py"
    script.write_text(_NO_COMPILER, "utf-8")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, encoding="utf-8",
                          env=dict(os.environ, CXX=str(tmp_path / "no-such-compiler"), AIGC_PROGRESS="off"),
                          timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert lines[0].startswith("torch.compile 在 CPU 上要用 C++ 编译器，这里用不了（") and "g++" in lines[0]
    assert lines[1:] == ["eager 后端照常训练", "fit: True"]


def test_compile_problem_on_gpu_asks_for_triton(monkeypatch):
    import importlib.util

    from aigc_lib import compile_problem

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "triton" else real(name, *a))
    assert "Triton" in compile_problem("cuda") and compile_problem("mps") is None


# ---------------------------------------------------------------- 显示与参数检查


def test_progress_prints_one_summary_line_per_epoch_and_plot_has_chinese_labels(capsys):
    import matplotlib

    matplotlib.use("Agg")
    torch.manual_seed(0)
    x, y = blobs(0, n=32)
    loader = DataLoader(TensorDataset(x, y), batch_size=8)
    model = mlp()
    history = fit(model, loader, loader, epochs=3, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                  metrics={"acc": accuracy_score}, progress=True, live_plot=True)  # 终端里 live_plot 不画图
    lines = [line for line in capsys.readouterr().out.splitlines() if "训练损失" in line]
    assert len(lines) == 3 and all("val_acc" in line for line in lines)
    fig = history.plot()
    left, right = fig.axes
    assert left.get_xlabel() == "轮次" and right.get_title() == "验证指标"
    assert {t.get_text() for t in left.get_legend().get_texts()} >= {"训练损失", "验证损失"}
    matplotlib.pyplot.close(fig)
    assert not matplotlib.pyplot.get_fignums()  # 没有留下多余的图


@pytest.mark.parametrize("native, auto", [(True, torch.bfloat16), (False, torch.float16)])
def test_auto_amp_on_a_gpu_uses_bf16_only_where_it_is_native(native, auto, monkeypatch):
    """T4、V100 上 torch.cuda.is_bf16_supported() 默认返回 True（能模拟），但模拟的 bf16 比 float32 还慢：
    auto 要选 fp16 + GradScaler，明确要 bf16 时说明原因。这里用 monkeypatch 扮演两种 GPU。"""
    from aigc_lib.core import runtime
    from aigc_lib.core.training import resolve_amp

    def is_bf16_supported(including_emulation=True):
        return native or including_emulation

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", is_bf16_supported)
    assert runtime.cuda_bf16_native() is native
    cuda = torch.device("cuda")
    assert resolve_amp("auto", cuda) == auto and resolve_amp("fp16", cuda) == torch.float16
    if native:
        assert resolve_amp("bf16", cuda) == torch.bfloat16
    else:
        with pytest.raises(ValueError, match="没有原生的 bf16"):
            resolve_amp("bf16", cuda)


@pytest.mark.parametrize("fast", [True, False])
def test_auto_amp_on_a_cpu_uses_bf16_only_where_the_cpu_does_it_fast(fast, monkeypatch):
    """没有 AVX-512 / AMX 的 CPU 上 bf16 是模拟的，训练比 float32 慢好几倍：auto 不开；明确要 bf16 时照做。"""
    from aigc_lib.core import training

    monkeypatch.setattr(training, "cpu_bf16_fast", lambda: fast)
    cpu = torch.device("cpu")
    assert training.resolve_amp("auto", cpu) == (torch.bfloat16 if fast else None)
    assert training.resolve_amp("bf16", cpu) == torch.bfloat16


def test_fp16_without_a_grad_scaler_is_refused_on_mps():
    from aigc_lib.core.training import resolve_amp

    with pytest.raises(ValueError, match="mps 上的 fp16 混合精度没有配损失缩放"):
        resolve_amp("fp16", torch.device("mps"))
    assert resolve_amp("auto", torch.device("mps")) is None and resolve_amp("bf16", torch.device("mps")) == torch.bfloat16


def test_torchrun_with_more_processes_than_gpus_says_so(monkeypatch):
    from aigc_lib.core import distributed

    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(distributed, "pick_device", lambda prefer: torch.device("cuda"))
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(RuntimeError, match="进程 1 没有自己的 GPU（本机 1 块）"):
        distributed.setup()


def test_bad_arguments_get_chinese_explanations():
    x, y = blobs(0, n=16)
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loader = DataLoader(TensorDataset(x, y), batch_size=8)
    with pytest.raises(ValueError, match="amp 只能是"):
        fit(model, loader, epochs=1, optimizer=opt, amp="fp8", progress=False)
    with pytest.raises(ValueError, match="bf16"):
        fit(model, loader, epochs=1, optimizer=opt, amp="fp16", device="cpu", progress=False)
    with pytest.raises(ValueError, match="标量"):
        fit(model, loader, epochs=1, optimizer=opt, loss_fn=nn.CrossEntropyLoss(reduction="none"), progress=False)
    with pytest.raises(TypeError, match="最后一个元素是目标"):
        fit(model, [x], epochs=1, optimizer=opt, progress=False)
    with pytest.raises(ValueError, match="epochs"):
        fit(model, loader, epochs=0, optimizer=opt, progress=False)


# ---------------------------------------------------------------- 选项：FitOptions


def test_options_object_and_keyword_arguments_train_the_same_weights():
    x, y = blobs(4)
    runs = []
    for how in ("kwargs", "options", "options+override"):
        torch.manual_seed(0)
        model = mlp()
        opt = torch.optim.AdamW(model.parameters(), lr=0.02)
        loader = DataLoader(TensorDataset(x, y), batch_size=16)
        kw = dict(optimizer=opt, clip_grad_norm=0.5, accumulate=2, progress=False)
        if how == "kwargs":
            fit(model, loader, epochs=3, **kw)
        elif how == "options":
            fit(model, loader, options=FitOptions(epochs=3, **kw))
        else:  # 关键字参数覆盖 options 里的同名项；options 本身不变
            opts = FitOptions(epochs=1, **kw)
            fit(model, loader, options=opts, epochs=3)
            assert opts.epochs == 1
        runs.append(weights(model))
    assert_same_weights(runs[0], runs[1])
    assert_same_weights(runs[0], runs[2])


def test_unknown_or_missing_options_are_explained_in_chinese():
    x, y = blobs(0, n=16)
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loader = DataLoader(TensorDataset(x, y), batch_size=8)
    with pytest.raises(TypeError, match="不认识") as info:
        fit(model, loader, epochs=1, optimizer=opt, max_epochs=3, progress=False)
    message = str(info.value)
    assert "max_epochs（是不是 epochs？）" in message
    # 列出的可用参数正好是 FitOptions 的字段
    listed = message.split("可用的参数：")[1].rstrip("。").split(", ")
    assert listed == [f.name for f in fields(FitOptions)]
    with pytest.raises(TypeError, match="缺少必填的参数 optimizer"):
        fit(model, loader, epochs=1)
    with pytest.raises(TypeError, match="options 应是 FitOptions"):
        fit(model, loader, None, {"epochs": 1})
    with pytest.raises(ValueError, match="accumulate"):
        FitOptions(epochs=1, optimizer=opt, accumulate=0)
    with pytest.raises(ValueError, match="log_every"):
        fit(model, loader, epochs=1, optimizer=opt, log_every=0)
