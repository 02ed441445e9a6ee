"""由 test_training_ddp.py 用 torchrun 启动的训练脚本；单进程参照从这里导入同样的构建函数。

    python -m torch.distributed.run --nproc_per_node=2 tests/_ddp_worker.py OUT_DIR

调用 fit 的代码与单进程完全相同；每个进程的批大小是全局批大小 / 进程数。
"""

import math
import os
import sys
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, Sampler, TensorDataset

from aigc_lib.core.training import fit, steps_per_epoch, warmup_cosine

SCENARIOS = ("sampler", "batch_sampler", "custom_step")
ACCUMULATE = {"custom_step": 2}  # custom_step 还累积 2 批再更新：检验 no_sync 与自定义 step 一起也对
GLOBAL_BATCH = 16


class ShuffledBatches(Sampler):
    """自定义 batch_sampler：每轮用全局随机数打乱，切成 batch_size 的批，再把相邻 group 个批合成一批。"""

    def __init__(self, n, batch_size, group=1):
        self.n, self.batch_size, self.group = n, batch_size, group

    def __iter__(self):
        order = torch.randperm(self.n).tolist()
        batches = [order[i : i + self.batch_size] for i in range(0, self.n, self.batch_size)]
        for i in range(0, len(batches), self.group):
            yield sum(batches[i : i + self.group], [])

    def __len__(self):
        return math.ceil(math.ceil(self.n / self.batch_size) / self.group)


class TinyNet(nn.Sequential):
    """两层 MLP，多一个自己的方法 scores：DDP 包装上没有它，step 拿到的若不是原模型就会报错。"""

    def scores(self, x):
        return self(x)


def custom_step(model, batch):
    """自定义的一步：直接用原模型的方法；fit 负责让 DDP 照样同步梯度。"""
    assert not isinstance(model, nn.parallel.DistributedDataParallel), "step 应拿到原模型"
    x, y = batch
    logits = model.scores(x)
    return F.cross_entropy(logits, y), logits, y


def accuracy(y_true, y_pred):
    return (y_true == y_pred).float().mean()


def build(scenario, per_process_batch, world_size):
    """同样的数据和初始化；per_process_batch × world_size 是全局批大小。"""
    g = torch.Generator().manual_seed(0)
    x, xv = torch.randn(100, 6, generator=g), torch.randn(51, 6, generator=g)  # 验证集 51 个：不能整除
    w = torch.randn(6, 3, generator=g)
    y, yv = (x @ w).argmax(1), (xv @ w).argmax(1)
    torch.manual_seed(0)
    model = TinyNet(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3))
    if scenario in ("sampler", "custom_step"):
        train = DataLoader(TensorDataset(x, y), batch_size=per_process_batch, shuffle=True)
    else:  # 每批 10 个：2 进程各取一批 == 1 进程取相邻两批合成的 20 个
        train = DataLoader(TensorDataset(x, y), batch_sampler=ShuffledBatches(100, 10, group=2 // world_size))
    val = DataLoader(TensorDataset(xv, yv), batch_size=8)
    opt = torch.optim.AdamW(model.parameters(), lr=0.02)
    sched = warmup_cosine(opt, 3, 3 * steps_per_epoch(train, accumulate=ACCUMULATE.get(scenario, 1)))
    return model, train, val, opt, sched


def run(scenario, per_process_batch, world_size, checkpoint_dir=None):
    model, train, val, opt, sched = build(scenario, per_process_batch, world_size)
    extra = dict(step=custom_step) if scenario == "custom_step" else {}
    history = fit(model, train, val, epochs=3, optimizer=opt, scheduler=sched, metrics={"acc": accuracy},
                  checkpoint_dir=checkpoint_dir, progress=False, accumulate=ACCUMULATE.get(scenario, 1), **extra)
    return model, history


if __name__ == "__main__":
    out = Path(sys.argv[1])
    world, rank = int(os.environ["WORLD_SIZE"]), int(os.environ["RANK"])
    for scenario in SCENARIOS:
        model, history = run(scenario, GLOBAL_BATCH // world, world, checkpoint_dir=out / scenario)
        # 每个进程都存一份最终权重：DDP 应让它们完全一致
        torch.save({"weights": model.state_dict(), "history": history.to_dict()}, out / f"{scenario}_rank{rank}.pt")
