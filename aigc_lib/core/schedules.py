"""学习率调度：先线性预热，再余弦或线性衰减，按“优化步”计数（不是按轮）。

    sched = warmup_cosine(optimizer, warmup_steps=100, total_steps=steps_per_epoch(loader) * epochs)
    fit(..., scheduler=sched)   # fit 每个优化步调用一次 sched.step()

返回的是 PyTorch 自带的 ``LambdaLR``，保存、恢复、与其他调度器组合都照常。
"""

from __future__ import annotations

import math

from torch.optim.lr_scheduler import LambdaLR


def warmup_cosine(optimizer, warmup_steps: int, total_steps: int, min_lr_ratio: float = 0.0) -> LambdaLR:
    """先线性预热，再按余弦曲线把学习率降到 ``min_lr_ratio`` × 初始学习率。

    第 s 个优化步（从 0 数）的学习率 = 初始学习率 × 倍数：
        s < warmup_steps:  (s + 1) / warmup_steps
        之后:              r + (1 - r) · (1 + cos(π·p)) / 2,   p = (s - warmup_steps) / (total_steps - warmup_steps)
    p 超过 1 后保持在最低值。fit 每做一次 optimizer.step() 就调一次 scheduler.step()，所以
    total_steps 要按优化步算：``steps_per_epoch(train_loader, accumulate) * epochs``。

    例：``sched = warmup_cosine(opt, warmup_steps=100, total_steps=2000, min_lr_ratio=0.1)``
    """
    _check_schedule(warmup_steps, total_steps, min_lr_ratio)

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        p = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * p))

    return LambdaLR(optimizer, factor)


def warmup_linear(optimizer, warmup_steps: int, total_steps: int, min_lr_ratio: float = 0.0) -> LambdaLR:
    """先线性预热，再线性降到 ``min_lr_ratio`` × 初始学习率（BERT 的做法）。

    预热段与 warmup_cosine 相同；之后倍数 = 1 - (1 - r) · p，p 的定义同上。
    例：``sched = warmup_linear(opt, warmup_steps=100, total_steps=2000)``
    """
    _check_schedule(warmup_steps, total_steps, min_lr_ratio)

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        p = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return 1 - (1 - min_lr_ratio) * p

    return LambdaLR(optimizer, factor)


def _check_schedule(warmup_steps, total_steps, min_lr_ratio) -> None:
    if not 0 <= warmup_steps <= total_steps:
        raise ValueError(f"需要 0 <= warmup_steps <= total_steps，收到 warmup_steps={warmup_steps}、total_steps={total_steps}。")
    if not 0.0 <= min_lr_ratio <= 1.0:
        raise ValueError(f"min_lr_ratio 是最终学习率与初始学习率之比，应在 [0, 1] 内，收到 {min_lr_ratio}。")
