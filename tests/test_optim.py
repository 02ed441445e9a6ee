"""aigc_lib.core.optim 的测试：手写优化器与 torch.optim 走出同一条轨迹；学习率范围测试的行为。

比较方法：两份相同的参数，每步喂给两个优化器完全相同的随机梯度（有时某个参数没有梯度），
每一步之后参数都必须一致。遍历每种选项组合、多个随机种子和随机形状。
"""

from __future__ import annotations

import inspect
import io
import itertools
import math

import pytest
import torch
from torch import nn

from aigc_lib import optim as ours

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
SEEDS = range(3)
STEPS = 12


def _grid(**options):
    """所有选项组合，每个组合一个 dict。"""
    names = list(options)
    for values in itertools.product(*options.values()):
        yield dict(zip(names, values))


SETTINGS = {
    "SGD": [
        s for s in _grid(lr=[0.1, 0.01], momentum=[0.0, 0.9], dampening=[0.0, 0.5],
                         weight_decay=[0.0, 0.1], nesterov=[False, True], maximize=[False, True])
        if not (s["nesterov"] and (s["momentum"] == 0 or s["dampening"] != 0))
    ],
    "RMSprop": list(_grid(lr=[0.01], alpha=[0.99, 0.8], eps=[1e-8, 1e-2], weight_decay=[0.0, 0.1],
                          momentum=[0.0, 0.9], centered=[False, True], maximize=[False, True])),
    "Adam": list(_grid(lr=[0.01], betas=[(0.9, 0.999), (0.5, 0.9)], eps=[1e-8, 1e-2],
                       weight_decay=[0.0, 0.1], amsgrad=[False, True], maximize=[False, True])),
    "AdamW": list(_grid(lr=[0.01, 0.1], betas=[(0.9, 0.999), (0.5, 0.9)], eps=[1e-8],
                        weight_decay=[0.0, 0.01, 0.5], amsgrad=[False, True], maximize=[False, True])),
}
NAMES = list(SETTINGS)


def _random_params(seed: int, dtype: torch.dtype, device: str) -> list[torch.Tensor]:
    """1-3 个形状随机的参数张量。"""
    g = torch.Generator().manual_seed(seed)
    params = []
    for _ in range(int(torch.randint(1, 4, (1,), generator=g))):
        shape = torch.randint(1, 5, (int(torch.randint(1, 4, (1,), generator=g)),), generator=g)
        params.append(torch.randn(*shape.tolist(), generator=g, dtype=dtype).to(device))
    return params


def _twins(params: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """两份独立但相同的叶子参数：一份给我们的优化器，一份给 torch.optim。"""
    return ([p.clone().requires_grad_() for p in params],
            [p.clone().requires_grad_() for p in params])


def _feed_same_grads(a, b, g: torch.Generator) -> None:
    """给两组参数相同的随机梯度；约 1/5 的概率某个参数本步没有梯度（应被跳过）。"""
    for pa, pb in zip(a, b):
        if float(torch.rand(1, generator=g)) < 0.2:
            pa.grad = pb.grad = None
            continue
        scale = 10 ** float(torch.empty(1).uniform_(-3, 1, generator=g))  # 梯度大小跨几个数量级
        grad = (torch.randn(pa.shape, generator=g, dtype=pa.dtype) * scale).to(pa.device)
        pa.grad, pb.grad = grad.clone(), grad.clone()


def _assert_same(a, b, step, rtol=1e-10, atol=1e-12, what=""):
    for i, (pa, pb) in enumerate(zip(a, b)):
        torch.testing.assert_close(pa, pb, rtol=rtol, atol=atol,
                                   msg=lambda m: f"{what} 第 {step} 步参数 {i} 不同：{m}")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", NAMES)
def test_trajectory_matches_torch_for_every_option(name, device):
    mine_cls, ref_cls = getattr(ours, name), getattr(torch.optim, name)
    for settings in SETTINGS[name]:
        for seed in SEEDS:
            a, b = _twins(_random_params(seed, torch.float64, device))
            mine, ref = mine_cls(a, **settings), ref_cls(b, **settings)
            g = torch.Generator().manual_seed(1000 + seed)
            for step in range(STEPS):
                _feed_same_grads(a, b, g)
                mine.step()
                ref.step()
                _assert_same(a, b, step, what=f"{name}{settings} seed={seed}")


@pytest.mark.parametrize("name", NAMES)
def test_float32_trajectory_matches_torch(name):
    mine_cls, ref_cls = getattr(ours, name), getattr(torch.optim, name)
    for settings in SETTINGS[name][::3]:
        for seed in SEEDS:
            a, b = _twins(_random_params(seed, torch.float32, "cpu"))
            mine, ref = mine_cls(a, **settings), ref_cls(b, **settings)
            g = torch.Generator().manual_seed(seed)
            for step in range(STEPS):
                _feed_same_grads(a, b, g)
                mine.step()
                ref.step()
                _assert_same(a, b, step, rtol=1e-5, atol=1e-6, what=f"{name}{settings}")


@pytest.mark.parametrize("name", NAMES)
def test_param_groups_with_their_own_settings(name):
    """两个参数组：不同学习率，第二组再改一个选项；每组按自己的设置更新。"""
    extra = {"SGD": {"momentum": 0.9}, "RMSprop": {"centered": True},
             "Adam": {"amsgrad": True}, "AdamW": {"weight_decay": 0.3}}[name]
    base = {"SGD": {"lr": 0.1}, "RMSprop": {}, "Adam": {}, "AdamW": {}}[name]
    mine_cls, ref_cls = getattr(ours, name), getattr(torch.optim, name)
    for seed in range(5):
        a1, b1 = _twins(_random_params(seed, torch.float64, "cpu"))
        a2, b2 = _twins(_random_params(seed + 50, torch.float64, "cpu"))
        groups = lambda p1, p2: [{"params": p1}, {"params": p2, "lr": 0.003, **extra}]
        mine, ref = mine_cls(groups(a1, a2), **base), ref_cls(groups(b1, b2), **base)
        g = torch.Generator().manual_seed(seed)
        for step in range(STEPS):
            _feed_same_grads(a1 + a2, b1 + b2, g)
            mine.step()
            ref.step()
            _assert_same(a1 + a2, b1 + b2, step, what=name)
        assert [grp["lr"] for grp in mine.param_groups] == [grp["lr"] for grp in ref.param_groups]


def _saved_and_loaded(state_dict: dict) -> dict:
    """像真正的检查点一样经过 torch.save / torch.load(weights_only=True)。"""
    buffer = io.BytesIO()
    torch.save(state_dict, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_round_trip_mid_trajectory(name):
    """走到一半存 state_dict，读进新的优化器继续走，轨迹与不中断的 torch.optim 相同。

    也检查与 torch.optim 的互读：torch 存的状态读进我们的优化器，我们存的读进 torch 的。
    """
    mine_cls, ref_cls = getattr(ours, name), getattr(torch.optim, name)
    for settings in SETTINGS[name][::4]:
        for seed in SEEDS:
            params = _random_params(seed, torch.float64, "cpu")
            a, b = _twins(params)
            mine, ref = mine_cls(a, **settings), ref_cls(b, **settings)
            g = torch.Generator().manual_seed(seed)
            for _ in range(5):
                _feed_same_grads(a, b, g)
                mine.step()
                ref.step()
            # 三个“续跑者”：读我们自己的状态 / 读 torch 的状态的我们 / 读我们的状态的 torch
            resumed = [(mine_cls, mine.state_dict()), (mine_cls, ref.state_dict()),
                       (ref_cls, mine.state_dict())]
            runners = []
            for cls, state in resumed:
                p = [x.detach().clone().requires_grad_() for x in a]
                opt = cls(p, **settings)
                opt.load_state_dict(_saved_and_loaded(state))
                runners.append((p, opt))
            for step in range(5, STEPS):
                grads_from = torch.Generator().manual_seed(10_000 + step)
                _feed_same_grads(b, b, grads_from)
                ref.step()
                for p, opt in runners:
                    grads_from = torch.Generator().manual_seed(10_000 + step)
                    _feed_same_grads(p, p, grads_from)
                    opt.step()
                    _assert_same(p, b, step, what=f"{name}{settings} 续跑")


@pytest.mark.parametrize("name", NAMES)
def test_closure_with_real_loss_matches_torch(name):
    """用真实损失和 closure 训练一个小网络：返回值是 closure 的损失，参数轨迹与 torch 相同。"""
    mine_cls, ref_cls = getattr(ours, name), getattr(torch.optim, name)
    for seed in range(4):
        torch.manual_seed(seed)
        x, y = torch.randn(16, 3, dtype=torch.float64), torch.randn(16, 1, dtype=torch.float64)
        net_a = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1)).double()
        net_b = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1)).double()
        net_b.load_state_dict(net_a.state_dict())
        opts = [mine_cls(net_a.parameters(), lr=0.01), ref_cls(net_b.parameters(), lr=0.01)]
        for step in range(STEPS):
            losses = []
            for net, opt in zip((net_a, net_b), opts):
                def closure(net=net, opt=opt):
                    opt.zero_grad()
                    loss = nn.functional.mse_loss(net(x), y)
                    loss.backward()
                    return loss
                losses.append(opt.step(closure))
            assert losses[0].item() == pytest.approx(losses[1].item(), rel=1e-10)
            _assert_same(list(net_a.parameters()), list(net_b.parameters()), step, what=name)
        opts[0].zero_grad()  # 从父类继承：默认把梯度设为 None
        assert all(p.grad is None for p in net_a.parameters())


@pytest.mark.parametrize("name", NAMES)
def test_same_arguments_and_defaults_as_torch(name):
    mine = inspect.signature(getattr(ours, name)).parameters
    ref = inspect.signature(getattr(torch.optim, name)).parameters
    for arg, param in mine.items():
        assert arg in ref, f"{name} 的参数 {arg} 在 torch.optim.{name} 里不存在"
        assert param.default == ref[arg].default, f"{name}({arg}=) 默认值与 torch 不同"
    # 能按位置传的参数，顺序必须与 torch 的开头一致（其余参数只能按关键字传，总是兼容）
    positional = lambda params: [a for a, p in params.items() if p.kind == p.POSITIONAL_OR_KEYWORD]
    assert positional(mine) == positional(ref)[: len(positional(mine))]


def test_invalid_arguments_raise_clear_errors():
    p = [torch.zeros(2, requires_grad=True)]
    bad = [
        (ours.SGD, {"lr": -1.0}, "lr"),
        (ours.SGD, {"lr": 0.1, "nesterov": True}, "nesterov"),
        (ours.SGD, {"lr": 0.1, "momentum": 0.9, "dampening": 0.1, "nesterov": True}, "dampening"),
        (ours.RMSprop, {"alpha": -0.5}, "alpha"),
        (ours.Adam, {"betas": (1.0, 0.999)}, "betas"),
        (ours.AdamW, {"weight_decay": -0.1}, "weight_decay"),
    ]
    for cls, kwargs, word in bad:
        with pytest.raises(ValueError, match=word):
            cls(p, **kwargs)


# ---------------------------------------------------------------- 学习率范围测试


class _RecordingSGD(torch.optim.SGD):
    """记下每次 step 时的学习率，用来核对范围测试真的用了它报告的学习率。"""

    def __init__(self, params, lr):
        super().__init__(params, lr=lr)
        self.seen_lrs = []

    def step(self, closure=None):
        self.seen_lrs.append(self.param_groups[0]["lr"])
        return super().step(closure)


def _regression_problem(seed: int, n_batches: int = 4):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(5, 1, generator=g)
    batches = []
    for _ in range(n_batches):
        x = torch.randn(8, 5, generator=g)
        batches.append((x, x @ w + 0.1 * torch.randn(8, 1, generator=g)))
    torch.manual_seed(seed)
    return nn.Linear(5, 1), batches


def test_lr_range_test_schedule_smoothing_and_restore():
    for seed in range(6):
        model, batches = _regression_problem(seed, n_batches=3)  # 批次少于步数：要循环使用
        before = {k: v.clone() for k, v in model.state_dict().items()}
        model.eval()
        raw = []

        def loss_fn(out, target):
            loss = nn.functional.mse_loss(out, target)
            raw.append(loss.item())
            return loss

        created = []

        def make_opt(params, lr):
            created.append(_RecordingSGD(params, lr=lr))
            return created[-1]

        start, end, steps, smooth = 1e-4, 1e-2, 10 + seed, 0.5 + 0.08 * seed
        lrs, losses = ours.lr_range_test(model, batches, loss_fn, make_opt, start, end, steps,
                                         smooth=smooth, diverge=1e9)
        assert len(lrs) == len(losses) == steps  # 学习率很小，不会发散
        assert lrs[0] == pytest.approx(start) and lrs[-1] == pytest.approx(end)
        ratios = [b / a for a, b in zip(lrs, lrs[1:])]
        assert ratios == pytest.approx([ratios[0]] * len(ratios))  # 指数增长
        assert created[0].seen_lrs == lrs
        # 平滑：带偏差修正的指数滑动平均，按定义逐步重算
        running = 0.0
        for i, (value, smoothed) in enumerate(zip(raw, losses)):
            running = smooth * running + (1 - smooth) * value
            assert smoothed == pytest.approx(running / (1 - smooth ** (i + 1)), rel=1e-12)
        # 模型权重和 eval 模式都恢复
        assert not model.training
        for k, v in model.state_dict().items():
            assert torch.equal(v, before[k]), f"{k} 没有恢复"


def test_lr_range_test_stops_when_loss_diverges():
    for seed in range(6):
        model, batches = _regression_problem(seed)
        lrs, losses = ours.lr_range_test(model, batches, nn.MSELoss(), torch.optim.SGD,
                                         start_lr=1e-3, end_lr=1e3, num_steps=60, smooth=0.0)
        assert len(lrs) < 60, "学习率到 1e3 时线性回归必然发散，应提前停止"
        assert all(math.isfinite(x) for x in losses)
        # 停止条件（超过“到目前为止最低损失”的 4 倍）在最后一点之前从未满足
        for i in range(len(losses) - 1):
            assert losses[i] <= 4.0 * min(losses[: i + 1])


def test_lr_range_test_restores_a_given_optimizer():
    model, batches = _regression_problem(0)
    opt = ours.Adam(model.parameters(), lr=0.05)
    for x, y in batches:  # 先正常训练几步，让优化器有状态
        opt.zero_grad()
        nn.functional.mse_loss(model(x), y).backward()
        opt.step()
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    state = {k: {n: t.clone() if torch.is_tensor(t) else t for n, t in s.items()}
             for k, s in opt.state_dict()["state"].items()}
    lrs, _ = ours.lr_range_test(model, batches, nn.MSELoss(), opt, 1e-5, 1.0, 20)
    assert len(lrs) > 1
    assert opt.param_groups[0]["lr"] == 0.05
    for k, s in opt.state_dict()["state"].items():
        for n, t in s.items():
            assert torch.equal(torch.as_tensor(t), torch.as_tensor(state[k][n])), f"状态 {n} 没有恢复"
    for k, v in model.state_dict().items():
        assert torch.equal(v, weights[k])


def test_lr_range_test_with_custom_step_equals_default_loop():
    """批次格式不同时用 step(model, batch) 自己算损失，结果与默认的 (*inputs, target) 写法一致。"""
    for seed in range(3):
        results = []
        for use_step in (False, True):
            model, batches = _regression_problem(seed)
            if use_step:
                flipped = [(y, x) for x, y in batches]  # 目标在前：默认写法处理不了
                step = lambda m, batch: nn.functional.mse_loss(m(batch[1]), batch[0])
                results.append(ours.lr_range_test(model, flipped, None, ours.SGD, 1e-4, 1.0, 15,
                                                  step=step))
            else:
                results.append(ours.lr_range_test(model, batches, nn.MSELoss(), ours.SGD, 1e-4, 1.0, 15))
        assert results[0][0] == results[1][0]
        assert results[0][1] == pytest.approx(results[1][1], rel=1e-6)


def test_lr_range_test_rejects_bad_arguments():
    model, batches = _regression_problem(0)
    for kwargs in [dict(start_lr=1.0, end_lr=0.1), dict(start_lr=0.0, end_lr=1.0),
                   dict(start_lr=1e-3, end_lr=1.0, num_steps=1)]:
        with pytest.raises(ValueError):
            ours.lr_range_test(model, batches, nn.MSELoss(), torch.optim.SGD, **kwargs)
    with pytest.raises(ValueError, match="loader"):
        ours.lr_range_test(model, [], nn.MSELoss(), torch.optim.SGD, 1e-3, 1.0, 5)


# ---------------------------------------------------------------- decay_param_groups


def _group_names(model, groups):
    """参数组 -> (衰减那组的参数名集合, 不衰减那组的参数名集合)，用 id 对回名字。"""
    names = {id(p): n for n, p in model.named_parameters()}
    by_decay = {g["weight_decay"]: {names[id(p)] for p in g["params"]} for g in groups}
    return by_decay.get(0.1, set()), by_decay.get(0.0, set())


def _library_models():
    from aigc_lib.models import BiLSTMTagger, RNNClassifier, TransformerClassifier

    torch.manual_seed(0)
    proj = {f"layers.0.attn.{x}_proj" for x in ("q", "k", "v", "out")}
    return [
        (RNNClassifier(vocab_size=30, embed_dim=8, hidden_dim=8, kind="lstm"),
         {"embedding.weight", "rnn.weight_ih_l0", "rnn.weight_hh_l0", "head.weight"},
         {"rnn.bias_ih_l0", "rnn.bias_hh_l0", "head.bias"}),
        (TransformerClassifier(30, d_model=8, num_heads=2, num_layers=1, dim_feedforward=16),
         {"embedding.weight", "layers.0.ff.0.weight", "layers.0.ff.3.weight", "head.weight"}
         | {f"{p}.weight" for p in proj},
         {"layers.0.norm1.weight", "layers.0.norm1.bias", "layers.0.norm2.weight", "layers.0.norm2.bias",
          "layers.0.ff.0.bias", "layers.0.ff.3.bias", "norm.weight", "norm.bias", "head.bias"}
         | {f"{p}.bias" for p in proj}),
        # CRF 的转移矩阵是矩阵，要衰减；起始、结束分数是一维的，不衰减
        (BiLSTMTagger(30, 5, embed_dim=8, hidden_dim=8, use_crf=True),
         {"embedding.weight", "lstm.weight_ih_l0", "lstm.weight_hh_l0", "lstm.weight_ih_l0_reverse",
          "lstm.weight_hh_l0_reverse", "head.weight", "crf.transitions"},
         {"lstm.bias_ih_l0", "lstm.bias_hh_l0", "lstm.bias_ih_l0_reverse", "lstm.bias_hh_l0_reverse", "head.bias",
          "crf.start_transitions", "crf.end_transitions"}),
    ]


@pytest.mark.parametrize("index", range(3))
def test_decay_groups_put_exactly_the_matrices_in_the_decayed_group(index):
    model, decayed, plain = _library_models()[index]
    groups = ours.decay_param_groups(model, 0.1)
    assert [g["weight_decay"] for g in groups] == [0.1, 0.0]
    assert _group_names(model, groups) == (decayed, plain)
    # 每个参数恰好在一组里
    assert sorted(id(p) for g in groups for p in g["params"]) == sorted(id(p) for p in model.parameters())


def test_decay_groups_on_torch_layers_skip_biases_and_norm_weights():
    """torch 自己的 Transformer 层：不衰减的正好是偏置和 LayerNorm 的参数（按模块类型独立地数出来）。"""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(20, 16), nn.TransformerEncoderLayer(16, 4, 32, batch_first=True),
                          nn.LayerNorm(16), nn.Linear(16, 3))
    expected_plain = {f"{m}.{n}" if m else n for m, module in model.named_modules()
                      for n, _ in module.named_parameters(recurse=False)
                      if n.endswith("bias") or isinstance(module, nn.LayerNorm)}
    decayed, plain = _group_names(model, ours.decay_param_groups(model, 0.1))
    assert plain == expected_plain and len(plain) == 11  # 5 个线性层的偏置 + 3 个 LayerNorm 的缩放和偏移
    assert decayed == {n for n, _ in model.named_parameters()} - expected_plain


def test_decay_groups_share_tied_weights_once_and_skip_frozen_ones():
    from aigc_lib.models import GPTLanguageModel

    torch.manual_seed(0)
    gpt = GPTLanguageModel(30, d_model=8, num_heads=2, num_layers=1)  # 输出层与词向量共享权重
    groups = ours.decay_param_groups(gpt, 0.1)
    flat = [p for g in groups for p in g["params"]]
    assert len(flat) == len({id(p) for p in flat}) == len(list(gpt.parameters()))
    model = nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 2))
    model[0].weight.requires_grad_(False)
    decayed, plain = _group_names(model, ours.decay_param_groups(model, 0.1))
    assert decayed == {"1.weight"} and plain == {"1.bias"}
    only_biases = ours.decay_param_groups(nn.LayerNorm(4), 0.1)
    assert [g["weight_decay"] for g in only_biases] == [0.0]  # 空的那组被省去
    with pytest.raises(ValueError, match="weight_decay"):
        ours.decay_param_groups(model, -0.1)


@pytest.mark.parametrize("optimizer", [torch.optim.AdamW, ours.AdamW])
@pytest.mark.parametrize("seed", SEEDS)
def test_adamw_with_decay_groups_equals_a_hand_written_update(optimizer, seed):
    """AdamW + 分组 == 手写的 AdamW：矩阵每步乘 (1 - lr·λ)，一维参数不乘，其余完全相同。"""
    lr, wd, (b1, b2), eps = 0.01, 0.1, (0.9, 0.999), 1e-8
    model, decayed, _ = _library_models()[seed % 3]
    names = dict(model.named_parameters())
    ref = {n: p.detach().clone() for n, p in names.items()}
    m = {n: torch.zeros_like(p) for n, p in ref.items()}
    v = {n: torch.zeros_like(p) for n, p in ref.items()}
    opt = optimizer(ours.decay_param_groups(model, wd), lr=lr, betas=(b1, b2), eps=eps)
    g = torch.Generator().manual_seed(seed)
    for t in range(1, STEPS + 1):
        grads = {n: torch.randn(p.shape, generator=g) for n, p in names.items()}
        for n, p in names.items():
            p.grad = grads[n].clone()
        opt.step()
        for n in ref:
            if n in decayed:
                ref[n].mul_(1 - lr * wd)
            m[n] = b1 * m[n] + (1 - b1) * grads[n]
            v[n] = b2 * v[n] + (1 - b2) * grads[n] ** 2
            ref[n] -= lr * (m[n] / (1 - b1**t)) / ((v[n] / (1 - b2**t)).sqrt() + eps)
        for n, p in names.items():
            torch.testing.assert_close(p.detach(), ref[n], atol=1e-6, rtol=1e-5, msg=f"第 {t} 步 {n}")
