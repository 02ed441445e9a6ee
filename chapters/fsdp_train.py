"""第 14 章的分片数据并行脚本：torchrun 把它启动 N 份，同一个小 GPT 先用 DDP、再用 FSDP 各训练一遍。

    python -m torch.distributed.run --nproc_per_node=2 fsdp_train.py runs/14_large_models/fsdp/data.pt OUT_DIR

- DATA.pt 是 notebook 写出的、已经切好的片段：
  ``{"x": (N, T), "y": (N, T), "n_val": 验证片段数, "model": {GPTLanguageModel 的参数}}``，前 n_val 个片段用来验证；
- ``--batch-size`` 是**全局**批大小：N 个进程每个取 batch_size / N 个片段；
- 每个进程调用的 ``train()`` 与单进程时一字不差，只有 ``strategy`` 不同：进程组、DDP 包装或 FSDP 分片、
  数据切分都由 ``fit`` 完成；
- 每个进程写 ``OUT_DIR/<strategy>_rank<r>.pt``：训练记录、本进程实际存着的参数 + 优化器状态字节数
  （:func:`aigc_lib.fsdp.local_bytes`，DTensor 只算本地那一片）、收齐后的完整权重。

notebook 里的单进程参照也调用这里的 ``train()``，所以数据、初始化和超参数完全相同。
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch
from torch.utils.data import DataLoader, TensorDataset

from aigc_lib import GPTLanguageModel, decay_param_groups, fit, fsdp


def train(data: dict, per_process_batch: int, strategy: str = "ddp", epochs: int = 3, lr: float = 3e-3,
          device=None, seed: int = 0):
    """建模型和数据、训练，返回 ``(model, optimizer, history)``。单进程和 torchrun 下调用方式相同。"""
    n_val = data["n_val"]
    x, y = data["x"], data["y"]
    train_loader = DataLoader(TensorDataset(x[n_val:], y[n_val:]), batch_size=per_process_batch, shuffle=True)
    val_loader = DataLoader(TensorDataset(x[:n_val], y[:n_val]), batch_size=64)
    torch.manual_seed(seed)  # 每个进程的初始权重、打乱顺序都相同（顺序由 rank 0 定，fit 再广播给各进程）
    model = GPTLanguageModel(**data["model"])  # dropout=0：各进程不抽随机数，才能与单进程逐位比较
    optimizer = torch.optim.AdamW(decay_param_groups(model, 0.01), lr=lr)
    history = fit(model, train_loader, val_loader, epochs=epochs, optimizer=optimizer, strategy=strategy,
                  clip_grad_norm=1.0, device=device, progress=False)
    return model, optimizer, history


def main() -> None:
    parser = argparse.ArgumentParser(description="第 14 章：用 torchrun 分别做 DDP 和 FSDP 训练")
    parser.add_argument("data", help="notebook 写出的 data.pt")
    parser.add_argument("out", help="输出目录（每个进程在这里写 <strategy>_rank<r>.pt）")
    parser.add_argument("--batch-size", type=int, default=16, help="全局批大小（所有进程加起来）")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--device", default="cpu", help="cpu（gloo 后端）或 cuda（nccl 后端，每个进程一块卡）")
    args = parser.parse_args()

    world, rank = int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0"))
    if args.batch_size % world:
        raise SystemExit(f"全局批大小 {args.batch_size} 不能被进程数 {world} 整除：请换一个批大小或进程数。")
    data = torch.load(args.data, weights_only=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for strategy in ("ddp", "fsdp"):
        model, optimizer, history = train(data, args.batch_size // world, strategy, args.epochs, device=args.device)
        held = fsdp.local_bytes(model, optimizer)  # 本进程存着的参数 + 优化器状态（FSDP 只有自己那一片）
        weights = fsdp.full_state(model.state_dict())  # 集合通信：每个进程都要调用；DDP 的本来就是完整的
        torch.save({"history": history.to_dict(), "bytes": held, "world_size": world,
                    "sharded": any(type(p).__name__ == "DTensor" for p in model.parameters()),
                    "weights": {k: v.cpu() for k, v in weights.items()}},
                   out / f"{strategy}_rank{rank}.pt")
        if rank == 0:
            print(f"{strategy}：{world} 个进程，最后一轮 val_loss {history['val_loss'][-1]:.4f}，"
                  f"rank 0 存着 {held / 1e6:.3f} MB 参数 + 优化器状态")


if __name__ == "__main__":
    main()
