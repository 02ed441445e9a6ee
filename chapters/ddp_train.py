"""第 12 章的数据并行训练脚本：torchrun 把它启动 N 份，``fit`` 自动变成 DDP 训练。

    python -m torch.distributed.run --nproc_per_node=2 ddp_train.py runs/12_efficiency/ddp/data.pt OUT_DIR

- DATA.pt 是 notebook 写出的、已经编码成整数的数据：
  ``{"train": [(ids, label), ...], "val": [...], "vocab_size": V, "model": {RNNClassifier 的参数}}``；
- ``--batch-size`` 是**全局**批大小：N 个进程每个取 batch_size / N 条，一步合起来正好 batch_size 条；
- 每个进程调用的 ``train()`` 与单进程时一字不差，进程组、DDP 包装、数据切分都由 ``fit`` 完成；
- 只有 rank 0 写 ``OUT_DIR/result.pt``（最终权重、训练记录、进程数、训练秒数）。

notebook 里的单进程参照也调用这里的 ``train()``，所以两边的数据、初始化和超参数完全相同。
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch
from aigc_lib import RNNClassifier, accuracy, fit, make_loader


def train(data: dict, per_process_batch: int, epochs: int = 1, lr: float = 3e-3, device=None, seed: int = 0):
    """建模型和数据、训练，返回 ``(model, history)``。单进程和 torchrun 下调用方式相同。"""
    torch.manual_seed(seed)  # 每个进程的初始权重相同（DDP 构造时还会再从 rank 0 广播一次）
    model = RNNClassifier(**data["model"])
    # 普通的随机采样器（不分桶）：torchrun 下 fit 把“同一个”打乱顺序按 rank 交错切开，
    # 所以 N 个进程各取 b 条的一步 == 单进程里连续 N*b 条的一步
    train_loader = make_loader(data["train"], batch_size=per_process_batch, shuffle=True, bucket=False, seed=seed)
    val_loader = make_loader(data["val"], batch_size=256)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    history = fit(model, train_loader, val_loader, epochs=epochs, optimizer=optimizer, device=device,
                  metrics={"accuracy": accuracy}, progress=False)
    return model, history


def main() -> None:
    parser = argparse.ArgumentParser(description="第 12 章：用 torchrun 做数据并行训练")
    parser.add_argument("data", help="notebook 写出的 data.pt")
    parser.add_argument("out", help="输出目录（rank 0 在这里写 result.pt）")
    parser.add_argument("--batch-size", type=int, default=64, help="全局批大小（所有进程加起来）")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--device", default="cpu", help="cpu（gloo 后端）或 cuda（nccl 后端，每个进程一块卡）")
    args = parser.parse_args()

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if args.batch_size % world:
        raise SystemExit(f"全局批大小 {args.batch_size} 不能被进程数 {world} 整除：请换一个批大小或进程数。")
    data = torch.load(args.data, weights_only=True)
    started = time.perf_counter()
    model, history = train(data, args.batch_size // world, args.epochs, args.lr, device=args.device)
    seconds = time.perf_counter() - started
    if int(os.environ.get("RANK", "0")) == 0:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        weights = {k: v.cpu() for k, v in model.state_dict().items()}
        torch.save({"weights": weights, "history": history.to_dict(), "world_size": world, "seconds": seconds},
                   out / "result.pt")
        print(f"rank 0：{world} 个进程，训练 {seconds:.1f} 秒，最后一轮的 val_accuracy {history['val_accuracy'][-1]:.4f}")


if __name__ == "__main__":
    main()
