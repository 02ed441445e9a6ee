"""由 test_training_fsdp.py 用 torchrun 启动：同一个小 GPT 分别用 DDP 和 FSDP 训练，记下结果。

    python -m torch.distributed.run --nproc_per_node=2 tests/_fsdp_worker.py OUT_DIR

每个进程的批大小是全局批大小 / 进程数；单进程参照从这里导入同样的 build / run。
"""

import os
import sys
from pathlib import Path

import torch
from torch.utils.data import DataLoader, TensorDataset

from aigc_lib.core import fsdp
from aigc_lib.core.optim import decay_param_groups
from aigc_lib.core.training import fit, steps_per_epoch, warmup_cosine
from aigc_lib.models.transformer import GPTLanguageModel

GLOBAL_BATCH = 16
EPOCHS = 3
ACCUMULATE = 2  # 累积 2 批再更新：FSDP 的 set_requires_gradient_sync 也要被检验到


def build(per_process_batch):
    """一个 2 层的小 GPT（没有 dropout：各进程不抽随机数，结果才能逐位比较）和一份有规律的假数据。"""
    g = torch.Generator().manual_seed(0)
    vocab, context = 32, 16
    start = torch.randint(0, vocab, (96, 1), generator=g)
    step = torch.randint(1, 4, (96, 1), generator=g)
    seq = (start + step * torch.arange(context + 1)) % vocab  # 等差数列：模型学得会，损失会下降
    noise = torch.rand(seq.shape, generator=g) < 0.1
    seq = torch.where(noise, torch.randint(0, vocab, seq.shape, generator=g), seq)
    x, y = seq[:, :-1], seq[:, 1:]
    train = DataLoader(TensorDataset(x[:64], y[:64]), batch_size=per_process_batch, shuffle=True)
    val = DataLoader(TensorDataset(x[64:], y[64:]), batch_size=5)  # 32 条、每批 5 条：两个进程的批数不同
    torch.manual_seed(0)
    model = GPTLanguageModel(vocab, d_model=32, num_heads=2, num_layers=2, dropout=0.0, context_len=context)
    opt = torch.optim.AdamW(decay_param_groups(model, 0.1), lr=3e-3)
    sched = warmup_cosine(opt, 2, EPOCHS * steps_per_epoch(train, accumulate=ACCUMULATE))
    return model, train, val, opt, sched


def run(per_process_batch, strategy="ddp", checkpoint_dir=None, epochs=EPOCHS, resume=None):
    model, train, val, opt, sched = build(per_process_batch)
    history = fit(model, train, val, epochs=epochs, optimizer=opt, scheduler=sched, strategy=strategy,
                  clip_grad_norm=1.0, accumulate=ACCUMULATE, checkpoint_dir=checkpoint_dir, resume=resume,
                  progress=False)
    return model, opt, history


if __name__ == "__main__":
    out = Path(sys.argv[1])
    world, rank = int(os.environ["WORLD_SIZE"]), int(os.environ["RANK"])
    per_process = GLOBAL_BATCH // world
    for strategy in ("ddp", "fsdp"):
        model, opt, history = run(per_process, strategy, checkpoint_dir=out / strategy)
        # 集合通信：每个进程都要调用；DDP 的 state_dict 本来就是完整的，full_state 原样返回
        weights = fsdp.full_state(model.state_dict())
        torch.save({"weights": weights, "history": history.to_dict(), "bytes": fsdp.local_bytes(model, opt),
                    "dtensor": any(type(p).__name__ == "DTensor" for p in model.parameters())},
                   out / f"{strategy}_rank{rank}.pt")
    # 续训：FSDP 先训 2 轮，再从 last.pt 接着训到 3 轮（优化器状态从完整张量切回分片）
    run(per_process, "fsdp", checkpoint_dir=out / "resumed", epochs=EPOCHS - 1)
    torch.distributed.barrier()  # 等 rank 0 写完 last.pt，别的进程才去读它
    model, opt, history = run(per_process, "fsdp", checkpoint_dir=out / "resumed", resume=out / "resumed")
    weights = fsdp.full_state(model.state_dict())
    if rank == 0:
        torch.save({"weights": weights, "history": history.to_dict()}, out / "resumed_rank0.pt")
