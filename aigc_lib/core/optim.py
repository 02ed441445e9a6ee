"""手写的优化器：SGD、RMSprop、Adam、AdamW，权重衰减的参数分组，以及学习率范围测试。

每个优化器都是 ``torch.optim.Optimizer`` 的子类，参数名和默认值与 ``torch.optim`` 里的同名类一样，
所以两者可以互换（``param_groups``、``zero_grad``、``state_dict``/``load_state_dict`` 都从父类继承）::

    from aigc_lib.core.optim import Adam
    opt = Adam(model.parameters(), lr=1e-3)          # 与 torch.optim.Adam 用法完全相同
    loss.backward(); opt.step(); opt.zero_grad()

状态字典的键名（``step``、``momentum_buffer``、``exp_avg`` ……）也与 torch.optim 相同，
因此 torch.optim.Adam 存下的 ``state_dict`` 可以直接读进这里的 ``Adam``，反之亦然。

记号（与第 07 章一致）：:math:`\\theta` 参数，:math:`g_t` 第 t 步的梯度，:math:`\\eta` 学习率 ``lr``，
:math:`\\lambda` ``weight_decay``。所有运算都逐元素进行。

为了读起来清楚，这里一个参数一个参数地更新；torch.optim 在 GPU 上会把多个参数合并成一次调用
（foreach/fused），所以更快，但算出的数字相同。本模块只依赖 PyTorch，可以单独复制。
"""

from __future__ import annotations

import copy
import math
from typing import Any, Callable, Iterable

import torch
from torch import nn

__all__ = ["SGD", "RMSprop", "Adam", "AdamW", "decay_param_groups", "lr_range_test"]


def _check_non_negative(**values: float) -> None:
    """参数检查：学习率、动量等不能为负。"""
    for name, value in values.items():
        if value < 0.0:
            raise ValueError(f"{name}={value} 无效：{name} 不能为负数，请传入 >= 0 的值。")


def _run_closure(closure: Callable[[], torch.Tensor] | None) -> torch.Tensor | None:
    """step(closure) 的约定：闭包重新计算损失并反向传播，所以要在开启梯度的环境里调用。"""
    if closure is None:
        return None
    with torch.enable_grad():
        return closure()


class SGD(torch.optim.Optimizer):
    r"""随机梯度下降，可选动量、阻尼、Nesterov 和 L2 权重衰减（与 ``torch.optim.SGD`` 相同）。

    参数：
        params: ``model.parameters()`` 或参数组列表（每组可以有自己的 ``lr`` 等）。
        lr: 学习率 :math:`\eta`，默认 1e-3。
        momentum: 动量系数 :math:`\mu`，默认 0（不用动量）。
        dampening: 阻尼 :math:`\tau`，新梯度只以 :math:`1-\tau` 的比例进入动量，默认 0。
        weight_decay: L2 权重衰减 :math:`\lambda`，默认 0。
        nesterov: 是否用 Nesterov 动量（要求 momentum > 0 且 dampening = 0）。
        maximize: 为 True 时沿梯度方向上升（最大化目标）。

    每一步（t 从 1 开始）：

    .. math::
        g_t \leftarrow g_t + \lambda \theta_{t-1}                            \\
        b_t = g_t \ (t = 1), \quad b_t = \mu b_{t-1} + (1-\tau) g_t \ (t > 1)  \\
        d_t = g_t + \mu b_t \ \text{(Nesterov)}, \quad d_t = b_t \ \text{(否则)}  \\
        \theta_t = \theta_{t-1} - \eta d_t

    例子::

        opt = SGD(model.parameters(), lr=0.1, momentum=0.9)
    """

    def __init__(
        self,
        params: Iterable,
        lr: float = 1e-3,
        momentum: float = 0,
        dampening: float = 0,
        weight_decay: float = 0,
        nesterov: bool = False,
        *,
        maximize: bool = False,
    ) -> None:
        _check_non_negative(lr=lr, momentum=momentum, weight_decay=weight_decay)
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("nesterov=True 需要 momentum > 0 且 dampening = 0，请调整这两个参数。")
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening,
                        weight_decay=weight_decay, nesterov=nesterov, maximize=maximize)
        super().__init__(params, defaults)

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        for group in self.param_groups:  # 旧版本存下的 state_dict 可能缺这些键
            group.setdefault("nesterov", False)
            group.setdefault("maximize", False)

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor | None:
        """做一步更新；``closure`` 可选，它重新计算并返回损失。"""
        loss = _run_closure(closure)
        for group in self.param_groups:
            lr, mu, tau = group["lr"], group["momentum"], group["dampening"]
            for p in group["params"]:
                if p.grad is None:  # 这个参数本轮没有参与计算，跳过
                    continue
                g = -p.grad if group["maximize"] else p.grad
                if group["weight_decay"] != 0:
                    g = g + group["weight_decay"] * p          # L2 正则的梯度 λθ
                if mu != 0:
                    state = self.state[p]
                    buf = state.get("momentum_buffer")
                    if buf is None:
                        buf = state["momentum_buffer"] = g.clone()  # b_1 = g_1
                    else:
                        buf.mul_(mu).add_(g, alpha=1 - tau)         # b_t = μ b_{t-1} + (1-τ) g_t
                    g = g + mu * buf if group["nesterov"] else buf  # Nesterov 再往前看一步
                p.add_(g, alpha=-lr)                                # θ_t = θ_{t-1} - η d_t
        return loss


class RMSprop(torch.optim.Optimizer):
    r"""RMSprop：用梯度平方的滑动平均给每个元素单独缩放步长（与 ``torch.optim.RMSprop`` 相同）。

    参数：
        params: ``model.parameters()`` 或参数组列表。
        lr: 学习率 :math:`\eta`，默认 1e-2。
        alpha: 平方梯度滑动平均的衰减率 :math:`\alpha`，默认 0.99。
        eps: 加在分母上防止除以 0 的 :math:`\epsilon`，默认 1e-8。
        weight_decay: L2 权重衰减 :math:`\lambda`，默认 0。
        momentum: 动量 :math:`\mu`，默认 0。
        centered: 为 True 时减去梯度均值的平方，即用梯度的方差来缩放。
        maximize: 为 True 时最大化目标。

    每一步：

    .. math::
        g_t \leftarrow g_t + \lambda \theta_{t-1}                          \\
        v_t = \alpha v_{t-1} + (1-\alpha) g_t^2                            \\
        \bar g_t = \alpha \bar g_{t-1} + (1-\alpha) g_t, \quad
        s_t = \sqrt{v_t - \bar g_t^2} + \epsilon \ \text{(centered)}, \quad
        s_t = \sqrt{v_t} + \epsilon \ \text{(否则)}                          \\
        b_t = \mu b_{t-1} + g_t / s_t, \quad \theta_t = \theta_{t-1} - \eta b_t \ (\mu > 0)  \\
        \theta_t = \theta_{t-1} - \eta\, g_t / s_t \ (\mu = 0)

    例子::

        opt = RMSprop(model.parameters(), lr=1e-3)
    """

    def __init__(
        self,
        params: Iterable,
        lr: float = 1e-2,
        alpha: float = 0.99,
        eps: float = 1e-8,
        weight_decay: float = 0,
        momentum: float = 0,
        centered: bool = False,
        *,
        maximize: bool = False,
    ) -> None:
        _check_non_negative(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay,
                            momentum=momentum)
        defaults = dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay,
                        momentum=momentum, centered=centered, maximize=maximize)
        super().__init__(params, defaults)

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("momentum", 0)
            group.setdefault("centered", False)
            group.setdefault("maximize", False)

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor | None:
        """做一步更新；``closure`` 可选，它重新计算并返回损失。"""
        loss = _run_closure(closure)
        for group in self.param_groups:
            lr, alpha, eps, mu = group["lr"], group["alpha"], group["eps"], group["momentum"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = -p.grad if group["maximize"] else p.grad
                state = self.state[p]
                if len(state) == 0:  # 第一次见到这个参数：状态从 0 开始
                    state["step"] = 0
                    state["square_avg"] = torch.zeros_like(p)
                    if mu > 0:
                        state["momentum_buffer"] = torch.zeros_like(p)
                    if group["centered"]:
                        state["grad_avg"] = torch.zeros_like(p)
                state["step"] = int(state["step"]) + 1
                if group["weight_decay"] != 0:
                    g = g + group["weight_decay"] * p                 # L2 正则的梯度 λθ
                v = state["square_avg"]
                v.mul_(alpha).addcmul_(g, g, value=1 - alpha)         # v_t = α v + (1-α) g²
                if group["centered"]:
                    g_avg = state["grad_avg"]
                    g_avg.mul_(alpha).add_(g, alpha=1 - alpha)        # ḡ_t = α ḡ + (1-α) g
                    s = (v - g_avg * g_avg).sqrt_().add_(eps)         # s_t = √(v - ḡ²) + ε
                else:
                    s = v.sqrt().add_(eps)                            # s_t = √v + ε
                if mu > 0:
                    buf = state["momentum_buffer"]
                    buf.mul_(mu).addcdiv_(g, s)                       # b_t = μ b + g / s
                    p.add_(buf, alpha=-lr)                            # θ_t = θ - η b_t
                else:
                    p.addcdiv_(g, s, value=-lr)                       # θ_t = θ - η g / s
        return loss


class Adam(torch.optim.Optimizer):
    r"""Adam：动量（一阶矩）加 RMSprop（二阶矩），再做偏差修正（与 ``torch.optim.Adam`` 相同）。

    参数：
        params: ``model.parameters()`` 或参数组列表。
        lr: 学习率 :math:`\eta`，默认 1e-3。
        betas: :math:`(\beta_1, \beta_2)`，一阶矩和二阶矩的衰减率，默认 (0.9, 0.999)。
        eps: 分母上的 :math:`\epsilon`，默认 1e-8。
        weight_decay: 权重衰减 :math:`\lambda`，默认 0。Adam 里它是加在梯度上的 L2 正则；
            ``decoupled_weight_decay=True`` 时改为直接缩小参数（即 AdamW）。
        amsgrad: 为 True 时用历史最大的 :math:`v_t` 做分母（AMSGrad）。
        maximize: 为 True 时最大化目标。
        decoupled_weight_decay: 见上；``AdamW`` 就是把它设为 True 的 Adam。

    每一步（t 从 1 开始）：

    .. math::
        g_t \leftarrow g_t + \lambda \theta_{t-1} \ \text{(L2)} \quad\text{或}\quad
        \theta_{t-1} \leftarrow (1 - \eta\lambda)\, \theta_{t-1} \ \text{(解耦, AdamW)}  \\
        m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t, \quad v_t = \beta_2 v_{t-1} + (1-\beta_2) g_t^2  \\
        v_t^{\max} = \max(v_{t-1}^{\max}, v_t) \ \text{(AMSGrad 时用它代替 } v_t \text{)}         \\
        \hat m_t = m_t / (1-\beta_1^t), \quad \hat v_t = v_t / (1-\beta_2^t)                   \\
        \theta_t = \theta_{t-1} - \eta\, \hat m_t / (\sqrt{\hat v_t} + \epsilon)

    例子::

        opt = Adam(model.parameters(), lr=1e-3, betas=(0.9, 0.98))
    """

    def __init__(
        self,
        params: Iterable,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
        amsgrad: bool = False,
        *,
        maximize: bool = False,
        decoupled_weight_decay: bool = False,
    ) -> None:
        _check_non_negative(lr=lr, eps=eps, weight_decay=weight_decay)
        if not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
            raise ValueError(f"betas={betas} 无效：两个衰减率都必须在 [0, 1) 之间，常用 (0.9, 0.999)。")
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                        amsgrad=amsgrad, maximize=maximize,
                        decoupled_weight_decay=decoupled_weight_decay)
        super().__init__(params, defaults)

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("amsgrad", False)
            group.setdefault("maximize", False)
            group.setdefault("decoupled_weight_decay", False)

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor | None:
        """做一步更新；``closure`` 可选，它重新计算并返回损失。"""
        loss = _run_closure(closure)
        for group in self.param_groups:
            lr, (beta1, beta2), eps = group["lr"], group["betas"], group["eps"]
            wd = group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = -p.grad if group["maximize"] else p.grad
                state = self.state[p]
                if len(state) == 0:  # 第一次见到这个参数：两个矩都从 0 开始
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                    if group["amsgrad"]:
                        state["max_exp_avg_sq"] = torch.zeros_like(p)
                # 从 torch.optim 读进来的 step 是 0 维张量，这里统一成 int
                t = state["step"] = int(state["step"]) + 1
                if wd != 0:
                    if group["decoupled_weight_decay"]:
                        p.mul_(1 - lr * wd)                     # AdamW：θ ← (1 - ηλ) θ，不经过 m、v
                    else:
                        g = g + wd * p                          # Adam：L2 梯度 λθ，会被 v 缩放
                m, v = state["exp_avg"], state["exp_avg_sq"]
                m.mul_(beta1).add_(g, alpha=1 - beta1)          # m_t = β1 m + (1-β1) g
                v.mul_(beta2).addcmul_(g, g, value=1 - beta2)   # v_t = β2 v + (1-β2) g²
                if group["amsgrad"]:
                    v = torch.maximum(state["max_exp_avg_sq"], v, out=state["max_exp_avg_sq"])
                m_hat = m / (1 - beta1**t)                      # 偏差修正：早期 m、v 偏向 0
                v_hat = v / (1 - beta2**t)
                p.addcdiv_(m_hat, v_hat.sqrt().add_(eps), value=-lr)  # θ_t = θ - η m̂ / (√v̂ + ε)
        return loss


class AdamW(Adam):
    r"""AdamW：权重衰减与梯度解耦的 Adam（与 ``torch.optim.AdamW`` 相同，默认 ``weight_decay=1e-2``）。

    与 Adam 只差一行：不把 :math:`\lambda\theta` 加进梯度（那样它会被 :math:`\sqrt{\hat v_t}` 缩放，
    梯度大的参数反而衰减得少），而是每步直接 :math:`\theta \leftarrow (1-\eta\lambda)\theta`，
    然后照常做 Adam 更新。参数与 :class:`Adam` 相同。

    例子::

        opt = AdamW(model.parameters(), lr=3e-4, weight_decay=0.1)
    """

    def __init__(
        self,
        params: Iterable,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
        *,
        maximize: bool = False,
    ) -> None:
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad,
                         maximize=maximize, decoupled_weight_decay=True)

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        for group in self.param_groups:  # 读进来的 state_dict 无论来自哪里，AdamW 总是解耦的
            group["decoupled_weight_decay"] = True


def decay_param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    r"""把模型的参数分成两组：矩阵（≥ 2 维）做权重衰减，偏置和归一化层的缩放（< 2 维）不做。

    权重衰减把参数往 0 拉，是为了限制矩阵（线性层、词向量、卷积核）的大小；偏置只是平移，
    LayerNorm 的缩放 :math:`\gamma` 被拉向 0 反而会把整层的输出压小，所以这些一维参数不衰减。
    按维数分组是 nanoGPT 的做法：不用认模块的类型，任何模型都适用。``requires_grad=False``
    的参数（冻结的词向量）不放进任何一组；同一个参数被共享（输入输出词向量绑定）时只出现一次。

    返回 ``torch.optim`` 认识的参数组列表（空的组被省去），直接交给优化器::

        opt = torch.optim.AdamW(decay_param_groups(model, 0.1), lr=3e-4)   # 本模块的 AdamW 也一样

    参数：
        model: 任意 ``nn.Module``。
        weight_decay: 矩阵那一组的 ``weight_decay``（≥ 0）；另一组是 0。
    """
    _check_non_negative(weight_decay=weight_decay)
    params = [p for p in model.parameters() if p.requires_grad]  # parameters() 已去掉共享的重复项
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    return [group for group in groups if group["params"]]


def lr_range_test(
    model: nn.Module,
    loader: Iterable,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None,
    optimizer: type[torch.optim.Optimizer] | torch.optim.Optimizer,
    start_lr: float = 1e-7,
    end_lr: float = 10.0,
    num_steps: int = 100,
    device: str | torch.device | None = None,
    *,
    smooth: float = 0.98,
    diverge: float = 4.0,
    step: Callable[[nn.Module, Any], torch.Tensor] | None = None,
) -> tuple[list[float], list[float]]:
    r"""学习率范围测试（Leslie Smith, 2015）：学习率从 ``start_lr`` 指数增长到 ``end_lr``，记录损失。

    第 i 步（i = 0 … num_steps-1）的学习率是
    :math:`\eta_i = \eta_{start} \cdot (\eta_{end}/\eta_{start})^{i/(N-1)}`，每步训练一个批次。
    记录的是平滑后的损失（带偏差修正的指数滑动平均，``smooth`` 是衰减率）。损失变成 NaN/inf，
    或超过目前最低平滑损失的 ``diverge`` 倍时提前停止。画 ``plt.semilogx(lrs, losses)``，
    一般选损失下降最快处、比最低点小约一个数量级的学习率。

    测试结束后模型恢复成调用前的权重（以及 train/eval 模式）；如果传入的是优化器对象，它的状态
    和学习率也会恢复，所以测试完可以直接开始正式训练。

    参数：
        model: 任意 ``nn.Module``。
        loader: 可迭代的批次（如 DataLoader），每个批次是元组 ``(*inputs, target)``：
            最后一项是目标，其余传给 ``model(*inputs)``。批次不够时从头再取。
        loss_fn: ``loss_fn(model(*inputs), target)`` 返回标量损失，如 ``nn.CrossEntropyLoss()``。
            给了 ``step`` 时可以是 None。
        optimizer: 优化器类（如 ``torch.optim.SGD`` 或本模块的 ``Adam``，用 ``lr=start_lr`` 创建），
            或已经建好的优化器对象（所有参数组都会被设成同一个学习率）。
        start_lr, end_lr: 起止学习率，需满足 0 < start_lr < end_lr。
        num_steps: 最多训练几步（至少 2）。
        device: 在哪个设备上跑；默认用模型参数所在的设备。给出时模型会被移到该设备。
        smooth: 损失滑动平均的衰减率，0 表示不平滑。
        diverge: 平滑损失超过最低值的多少倍时认为发散并停止。
        step: 可选，``step(model, batch) -> loss``，批次不是 ``(*inputs, target)`` 的形式时用它
            自己算损失（与 ``fit`` 的 step 参数相同；批次里的张量已在 device 上）。

    返回：
        ``(lrs, losses)``：两个等长的 Python 列表，每步的学习率和平滑后的损失。

    例子::

        lrs, losses = lr_range_test(model, train_loader, nn.CrossEntropyLoss(), Adam,
                                    start_lr=1e-6, end_lr=1.0, num_steps=100)
    """
    if not 0 < start_lr < end_lr:
        raise ValueError(f"start_lr={start_lr}、end_lr={end_lr} 无效：需要 0 < start_lr < end_lr。")
    if num_steps < 2:
        raise ValueError(f"num_steps={num_steps} 太少：范围测试至少需要 2 步。")
    if not 0 <= smooth < 1:
        raise ValueError(f"smooth={smooth} 无效：滑动平均的衰减率必须在 [0, 1) 之间。")
    if device is not None:
        model.to(device)
    dev = torch.device(device) if device is not None else next(model.parameters()).device

    # 先存下模型（和优化器）的初始状态，测试结束后放回去
    # （state_dict() 返回的是对现有张量的引用，所以要 deepcopy）
    initial_weights = copy.deepcopy(model.state_dict())
    was_training = model.training
    if isinstance(optimizer, torch.optim.Optimizer):
        opt = optimizer
        initial_opt_state = copy.deepcopy(opt.state_dict())
    else:
        opt = optimizer(model.parameters(), lr=start_lr)
        initial_opt_state = None

    gamma = (end_lr / start_lr) ** (1 / (num_steps - 1))  # 每步把学习率乘以 gamma
    lrs: list[float] = []
    losses: list[float] = []
    running, best = 0.0, math.inf
    batches = iter(loader)
    model.train()
    try:
        for i in range(num_steps):
            lr = start_lr * gamma**i
            for group in opt.param_groups:
                group["lr"] = lr
            try:
                batch = next(batches)
            except StopIteration:  # 数据用完了就从头再来
                batches = iter(loader)
                batch = next(batches, None)
                if batch is None:
                    raise ValueError("loader 里没有任何批次：请检查数据集是否为空、batch_size 是否过大（drop_last）。")
            batch = [x.to(dev) if torch.is_tensor(x) else x for x in batch]
            if step is not None:
                loss = step(model, batch)
            else:
                *inputs, target = batch
                loss = loss_fn(model(*inputs), target)
            value = loss.item()
            if not math.isfinite(value):  # 已经发散，没必要再反向传播
                break
            opt.zero_grad()
            loss.backward()
            opt.step()
            running = smooth * running + (1 - smooth) * value
            smoothed = running / (1 - smooth ** (i + 1))  # 偏差修正，和 Adam 的 m̂ 一样
            lrs.append(lr)
            losses.append(smoothed)
            best = min(best, smoothed)
            if smoothed > diverge * best:
                break
    finally:
        model.load_state_dict(initial_weights)
        model.train(was_training)
        if initial_opt_state is not None:
            opt.load_state_dict(initial_opt_state)
    return lrs, losses
