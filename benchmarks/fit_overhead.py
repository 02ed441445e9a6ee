"""fit 比手写的最简训练循环慢多少？同一个模型、同样的数据、同样的步数，两者交替跑几轮。

    python benchmarks/fit_overhead.py            # CPU 上约一分钟；有 GPU 时自动用 GPU，脚本不用改

每次都重新建模型和优化器（同一个种子），先各跑一次热身，再交替计时。打印每种做法吞吐的
中位数和各次的值；最后一行 ``ratio <fit/手写循环>`` 是两者吞吐中位数之比（目标 >= 0.97）。

怎么计时：GPU 上用墙钟时间（前后 cuda.synchronize）。CPU 上用单线程和本进程的 CPU 时间
（time.process_time）：在共享或繁忙的机器（CI）上，别的进程抢走 CPU 的时间会让墙钟读数
忽快忽慢 ±30%，而本进程实际花掉的 CPU 时间不受影响——比较的正是两种循环自己要做多少事。
fit 按平时的用法调用：进度条开着（CI 里自动安静），每轮一行小结（这里被收起来不打印）。
"""

import contextlib
import io
import statistics
import time

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from aigc_lib.runtime import device, seed_everything
from aigc_lib.training import fit

REPEATS = 9


class BagOfEmbeddings(nn.Module):
    """词向量取平均 + 两层 MLP 的文本分类器：(B, T) 词号 -> (B, C) logits。"""

    def __init__(self, vocab, dim, hidden, classes):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU(),
                                 nn.Linear(hidden, classes))

    def forward(self, tokens):
        return self.mlp(self.embed(tokens).mean(1))  # (B, T, D) -> (B, D) -> (B, C)


def sizes(dev):
    if dev.type == "cuda":  # GPU 上把每步的计算量调大，测的才是 fit 的开销而不是 kernel 启动
        return dict(vocab=20000, dim=512, hidden=4096, classes=10, seq=128, batch=512, steps=400)
    return dict(vocab=5000, dim=128, hidden=512, classes=10, seq=64, batch=64, steps=300)


def make(cfg, dev):
    seed_everything(0)
    tokens = torch.randint(0, cfg["vocab"], (cfg["batch"] * cfg["steps"], cfg["seq"]))
    labels = torch.randint(0, cfg["classes"], (len(tokens),))
    loader = DataLoader(TensorDataset(tokens, labels), batch_size=cfg["batch"], shuffle=True,
                        pin_memory=dev.type == "cuda")
    model = BagOfEmbeddings(cfg["vocab"], cfg["dim"], cfg["hidden"], cfg["classes"]).to(dev)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    return model, loader, optimizer


def clock(dev) -> float:
    """GPU：等排队的 kernel 都算完再读墙钟；CPU：本进程用掉的 CPU 时间（见文件开头）。"""
    if dev.type == "cuda":
        torch.cuda.synchronize()
        return time.perf_counter()
    return time.process_time()


def bare_loop(cfg, dev):
    model, loader, optimizer = make(cfg, dev)
    start = clock(dev)
    model.train()
    for tokens, labels in loader:
        tokens, labels = tokens.to(dev, non_blocking=True), labels.to(dev, non_blocking=True)
        loss = F.cross_entropy(model(tokens), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return len(loader.dataset) / (clock(dev) - start)


def through_fit(cfg, dev):
    model, loader, optimizer = make(cfg, dev)
    start = clock(dev)
    with contextlib.redirect_stdout(io.StringIO()):
        fit(model, loader, epochs=1, optimizer=optimizer, loss_fn=F.cross_entropy, device=dev, progress=True)
    return len(loader.dataset) / (clock(dev) - start)


def main():
    dev = device()
    cfg = sizes(dev)
    if dev.type == "cpu":
        # 单线程：这么小的模型多线程几乎不快，而在繁忙或共享的机器（CI）上 OpenMP 线程互相等待，
        # 同一段代码的耗时能相差几十倍，比较就没有意义了。两种做法用同样的线程数。
        torch.set_num_threads(1)
    print(f"设备 {dev}，每次 {cfg['steps']} 步、每步 {cfg['batch']} 个样本，重复 {REPEATS} 次（交替）")
    runs = {"fit": through_fit, "bare": bare_loop}
    for run in runs.values():  # 热身：首次调用的导入、内存分配、cuDNN 选算法都不计时
        run(cfg, dev)
    speeds = {name: [] for name in runs}
    for repeat in range(REPEATS):
        order = list(runs) if repeat % 2 == 0 else list(runs)[::-1]  # 轮流先跑，抵消机器状态的漂移
        for name in order:
            speeds[name].append(runs[name](cfg, dev))
    unit = "样本/秒" if dev.type == "cuda" else "样本/CPU秒"
    for name, values in speeds.items():
        print(f"{name:5s} 中位数 {statistics.median(values):8.0f} {unit}   各次: " + " ".join(f"{v:.0f}" for v in values))
    print(f"ratio {statistics.median(speeds['fit']) / statistics.median(speeds['bare']):.3f}")


if __name__ == "__main__":
    main()
