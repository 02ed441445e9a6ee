"""fit 比手写的最简训练循环慢多少？同一个模型、同样的数据、同样的步数，两者交替跑很多轮。

    python benchmarks/fit_overhead.py            # 2 核的 CPU 上不到一分钟；有 GPU 时自动用 GPU，脚本不用改

每次都重新建模型和优化器（同一个种子，数据只建一次）。两种做法先各热身 WARMUP 次，再交替计时
REPEATS 轮（fit, 手写 / 手写, fit / ...），计时方法见 benchmarks/timing.py（CPU 上单线程、本进程的
CPU 时间）。每次只跑几十步、重复很多轮：别的进程抢占 CPU 的状态变得很快，紧挨着的两次才处在同样的
状态下；轮数多，中位数的置信区间才窄。fit 按 CI 里的样子调用：进度条关掉（progress=False）。

判断看配对比值：同一轮里 fit 与手写循环紧挨着跑，比值 fit/手写 受机器忽快忽慢的影响比各自的吞吐小得多。
打印每种做法吞吐的中位数和各次的值，最后一行是

    ratio <配对比值的中位数> [<95% 置信区间下界>, <上界>]

置信区间用 bootstrap 算（见 timing.paired_ratio）。目标：fit 至少是手写循环的 0.97 倍。
置信区间的上界都低于 0.97（有把握地说 fit 慢了 3% 以上）时，脚本以返回码 1 退出；否则返回 0。
"""

import statistics
import sys

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from aigc_lib.core.runtime import device, seed_everything
from aigc_lib.core.training import fit
from timing import interleaved_throughput, paired_ratio

WARMUP = 3
REPEATS = 151
TARGET = 0.97


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
        return dict(vocab=20000, dim=512, hidden=4096, classes=10, seq=128, batch=512, steps=100)
    return dict(vocab=5000, dim=128, hidden=512, classes=10, seq=64, batch=64, steps=20)


def make_data(cfg):
    """随机的词号和标签（只建一次，每次计时都用它）。"""
    seed_everything(0)
    tokens = torch.randint(0, cfg["vocab"], (cfg["batch"] * cfg["steps"], cfg["seq"]))
    return TensorDataset(tokens, torch.randint(0, cfg["classes"], (len(tokens),)))


def make(cfg, dev):
    """同一个种子下的新模型、新优化器、打乱顺序相同的 DataLoader：每次计时做的是完全相同的事。"""
    seed_everything(0)
    loader = DataLoader(cfg["data"], batch_size=cfg["batch"], shuffle=True, pin_memory=dev.type == "cuda")
    model = BagOfEmbeddings(cfg["vocab"], cfg["dim"], cfg["hidden"], cfg["classes"]).to(dev)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    return model, loader, optimizer


def bare_loop(cfg, dev):
    """手写的最简循环：前向、损失、反向、更新，别的什么都不做。"""
    model, loader, optimizer = make(cfg, dev)

    def work():
        model.train()
        for tokens, labels in loader:
            tokens, labels = tokens.to(dev, non_blocking=True), labels.to(dev, non_blocking=True)
            loss = F.cross_entropy(model(tokens), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    return work, len(loader.dataset)


def through_fit(cfg, dev):
    model, loader, optimizer = make(cfg, dev)

    def work():
        fit(model, loader, epochs=1, optimizer=optimizer, loss_fn=F.cross_entropy, device=dev, progress=False)

    return work, len(loader.dataset)


def main() -> int:
    dev = device()
    cfg = sizes(dev)
    cfg["data"] = make_data(cfg)
    if dev.type == "cpu":
        torch.set_num_threads(1)  # 见 timing.py：两种做法用同样的单线程
    print(f"设备 {dev}，每次 {cfg['steps']} 步、每步 {cfg['batch']} 个样本，热身 {WARMUP} 次，交替重复 {REPEATS} 轮")
    speeds = interleaved_throughput({"fit": lambda: through_fit(cfg, dev), "bare": lambda: bare_loop(cfg, dev)},
                                    dev, REPEATS, warmup=WARMUP)
    unit = "样本/秒" if dev.type == "cuda" else "样本/CPU秒"
    for name, values in speeds.items():
        print(f"{name:5s} 中位数 {statistics.median(values):8.0f} {unit}   各次: " + " ".join(f"{v:.0f}" for v in values))
    median, low, high = paired_ratio(speeds["fit"], speeds["bare"])
    print(f"ratio {median:.3f} [{low:.3f}, {high:.3f}]")
    if high < TARGET:
        print(f"fit 明显慢于手写循环：95% 置信区间的上界 {high:.3f} < {TARGET}。", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
