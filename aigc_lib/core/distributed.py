"""多进程训练：用 torchrun 启动同一个脚本 N 份，fit 自动变成 DistributedDataParallel（DDP）训练。

    torchrun --nproc_per_node=2 train.py      # GPU 上每块卡一个进程（nccl），CPU 上也能跑（gloo）

torchrun 给每个进程（一个 rank）设置环境变量 RANK、WORLD_SIZE、LOCAL_RANK、MASTER_ADDR、
MASTER_PORT。fit 看到它们就用本模块：初始化进程组，把模型包进 DDP（反向传播时自动平均各进程的
梯度；fit 包的是“模型 + 一步”，所以自定义的 step 拿到的仍是原模型），把数据切成互不重叠的 N 份，把损失和指标汇总到每个进程，只在 rank 0 上打印和保存。

数据怎么切：每一轮由 rank 0 生成原来的采样顺序（或批次列表）并广播给所有进程，rank r 取第
r, r+N, r+2N, ... 个。任何采样器（随机、顺序、加权、按长度分桶的 batch_sampler）都能这样切，
各进程的数据互不重叠；但“N 个进程等于一个 N 倍大的批”只在下面的条件下逐位成立：

- **逐条抽样的采样器**（DataLoader 的 batch_size + 随机/顺序/加权采样器）：N 个进程各取 b 个样本的
  一步，正好是单进程顺序里连续 N*b 个样本。DDP 把各进程平均损失的梯度再平均，所以当每个进程的批都是
  b 个样本（训练时各进程丢掉末尾凑不齐 N 份的样本，单进程不丢：条数最好是 N*b 的倍数）、损失按样本
  平均、模型里没有 dropout 之类各进程各抽各的随机数时，同一个种子下 2 进程 × 每进程 32 个样本与
  1 进程 × 64 个样本训练出相同的权重（只差浮点舍入；语言模型任务实测最大差 6e-6）。
  最后一批不满、按 token 平均而各进程 token 数不同、或有 dropout 时，两者只在统计上等价。
- **自定义的 batch_sampler**（例如情感任务按长度分桶）：切的是整批。N 个进程的一步是单进程的连续 N 个
  批，对应单进程用同一个 batch_sampler 再累积 N 批（``accumulate=N``），而不是一个 N 倍大的批：分桶按
  批大小把长度相近的句子装在一起，64 一批与两个 32 一批装进的句子不同。所以情感任务的 2 × 32 与 1 × 64
  权重不同（实测最大差约 0.03），只在统计上等价。

只有 rank 0 打印（fit 的进度条和每轮小结、任务的提示行）和写文件；其余进程安静地计算。

不在 torchrun 下时，这里的一切都退化为单进程的空操作，调用代码不用改。
"""

from __future__ import annotations

import atexit
import os
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, IterableDataset, Sampler

from .runtime import device as pick_device


def launched_by_torchrun() -> bool:
    """本进程是不是由 torchrun（torch.distributed.run）启动的。"""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


@dataclass
class DistContext:
    """本进程在分布式训练中的位置。单进程时 rank=0、world_size=1，所有汇总操作原样返回。"""

    rank: int = 0
    world_size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """只有主进程（rank 0）打印、画图、保存检查点。"""
        return self.rank == 0

    def sum(self, values: list[float]) -> list[float]:
        """把每个进程的几个数分别求和（例如 [损失总和, 样本数]），每个进程都得到总和。"""
        if not self.enabled:
            return [float(v) for v in values]
        # nccl 只能归约 GPU 上的张量，gloo 用 CPU 张量；float64 让大样本数的求和保持精确
        where = self.device if dist.get_backend() == "nccl" else torch.device("cpu")
        tensor = torch.tensor([float(v) for v in values], dtype=torch.float64, device=where)
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor.tolist()

    def gather(self, obj) -> list:
        """收集每个进程的一个 Python 对象，返回按 rank 排好的列表（单进程时是 [obj]）。"""
        if not self.enabled:
            return [obj]
        out = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def broadcast(self, obj):
        """把 rank 0 的对象发给所有进程，返回它。"""
        if not self.enabled:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]


def setup(prefer: str | torch.device | None = None) -> DistContext:
    """确定本进程的设备；在 torchrun 下还要初始化进程组（只初始化一次）。

    GPU 上 rank 用第 LOCAL_RANK 块卡、nccl 后端；CPU（或 device="cpu"）上用 gloo 后端。
    """
    world = int(os.environ.get("WORLD_SIZE", "1")) if launched_by_torchrun() else 1
    if dist.is_available() and dist.is_initialized():
        world = dist.get_world_size()
    dev = pick_device(prefer)
    if world <= 1:
        return DistContext(device=dev)
    if dev.type == "cuda" and dev.index is None:
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if local_rank >= torch.cuda.device_count():
            raise RuntimeError(f"torchrun 在这台机器上启动的进程比 GPU 多：进程 {local_rank} 没有自己的 GPU"
                               f"（本机 {torch.cuda.device_count()} 块）。请把 --nproc_per_node 改成不超过 GPU 的块数，"
                               "或加 --device cpu 用 CPU 进程（gloo）。")
        dev = torch.device("cuda", local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)  # nccl 和 all_gather_object 都用“当前”GPU
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
        atexit.register(_destroy_process_group)
    return DistContext(rank=dist.get_rank(), world_size=dist.get_world_size(), device=dev)


def _destroy_process_group() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def wrap_model(model: torch.nn.Module, ctx: DistContext) -> torch.nn.Module:
    """包进 DDP：构造时把 rank 0 的参数广播给所有进程，之后每次 backward 平均梯度。

    DDP 只在经过它自己的 forward 时才为随后的 backward 安排梯度同步，所以前向必须通过返回的包装调用。
    """
    if not ctx.enabled:
        return model
    device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids)


class ShardedSampler(Sampler):
    """把任意采样器（或 batch_sampler）按 rank 切片：本进程取第 rank, rank+N, ... 个元素。

    每轮都由 rank 0 决定顺序并广播，所以即使各进程的随机数状态不同，切片也互不重叠。
    even=True（训练用）时丢掉末尾凑不齐 N 个的元素，让每个进程的批数相同——DDP 要求各进程做
    同样多次 backward，否则先做完的进程会一直等。验证用 even=False，一个样本也不丢。
    """

    def __init__(self, sampler, ctx: DistContext, *, even: bool) -> None:
        self.sampler, self.ctx, self.even = sampler, ctx, even

    def __len__(self) -> int:
        return shard_size(len(self.sampler), self.ctx.rank, self.ctx.world_size, self.even)

    def __iter__(self):
        # 写成生成器：与原采样器一样，到取第一个元素时才抽随机数，随机数的消耗顺序与单进程相同。
        # 每个进程都迭代一次原采样器：各进程消耗的随机数一样多，随机状态保持一致。
        order = self.ctx.broadcast(list(self.sampler))
        if self.even:
            order = order[: len(order) // self.ctx.world_size * self.ctx.world_size]
        yield from order[self.ctx.rank :: self.ctx.world_size]

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)


def shard_size(n: int, rank: int, world_size: int, even: bool) -> int:
    """n 个元素按 rank 切片后，第 rank 个进程分到几个。"""
    if even:
        return n // world_size
    return len(range(rank, n, world_size))


def _already_sharded(loader: DataLoader) -> bool:
    """DistributedSampler、按进程切分的 BucketBatchSampler 等都带 num_replicas：调用者已经切好了。"""
    return any(getattr(s, "num_replicas", 1) > 1 for s in (loader.sampler, loader.batch_sampler))


def _has_custom_batch_sampler(loader: DataLoader) -> bool:
    """DataLoader(batch_size=...) 会自己造一个 BatchSampler；用户传入的 batch_sampler 才算“自定义”。"""
    return loader.batch_size is None and loader.batch_sampler is not None


def shard_loader(loader, ctx: DistContext, *, train: bool):
    """返回只读取本进程那一份数据的 DataLoader（单进程时原样返回）。

    普通采样器：用 ShardedSampler 包住它，批大小、collate_fn、num_workers 等设置照搬
    （验证用的 DataLoader 忽略 drop_last：每个样本都算到）；
    自定义 batch_sampler（例如按长度分桶）：每个进程拿每第 N 个批次，训练时各进程批数相同。
    已经按进程切好的 DataLoader（DistributedSampler，或 num_replicas > 1 的 batch_sampler）不再改动。
    """
    if not ctx.enabled or loader is None:
        return loader
    if not isinstance(loader, DataLoader):
        raise TypeError(
            f"分布式训练需要 torch.utils.data.DataLoader，收到的是 {type(loader).__name__}。"
            "请把数据包成 Dataset 再用 DataLoader(dataset, batch_size=...) 传给 fit。"
        )
    if isinstance(loader.dataset, IterableDataset):
        raise TypeError(
            "分布式训练无法自动切分 IterableDataset（它没有下标）。请改用普通 Dataset，"
            "或在 IterableDataset.__iter__ 里按 torch.distributed.get_rank() 只产出自己那一份。"
        )
    if _already_sharded(loader):
        return loader
    kwargs = dict(
        num_workers=loader.num_workers,
        collate_fn=loader.collate_fn,
        pin_memory=loader.pin_memory,
        timeout=loader.timeout,
        worker_init_fn=loader.worker_init_fn,
        multiprocessing_context=loader.multiprocessing_context,
        generator=loader.generator,
        persistent_workers=loader.persistent_workers,
    )
    if loader.num_workers > 0:
        kwargs["prefetch_factor"] = loader.prefetch_factor
    if hasattr(loader, "in_order"):  # PyTorch 2.6 起才有的参数
        kwargs["in_order"] = loader.in_order
    if _has_custom_batch_sampler(loader):
        return DataLoader(
            loader.dataset, batch_sampler=ShardedSampler(loader.batch_sampler, ctx, even=train), **kwargs
        )
    return DataLoader(
        loader.dataset,
        batch_size=loader.batch_size,
        drop_last=loader.drop_last and train,  # 验证时每个样本都要算到
        sampler=ShardedSampler(loader.sampler, ctx, even=train),
        **kwargs,
    )


def batches_per_rank(loader, world_size: int) -> int:
    """切分后每个进程每轮有几个批次（与 shard_loader 的切法一致）。"""
    if world_size <= 1 or not isinstance(loader, DataLoader) or _already_sharded(loader):
        return len(loader)
    if _has_custom_batch_sampler(loader):
        return shard_size(len(loader.batch_sampler), 0, world_size, even=True)
    n = shard_size(len(loader.sampler), 0, world_size, even=True)
    if loader.batch_size is None:
        return n
    return n // loader.batch_size if loader.drop_last else -(-n // loader.batch_size)
