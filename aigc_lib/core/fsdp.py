"""分片数据并行（FSDP，PyTorch 的 ``fully_shard``，即 FSDP2）：``fit(..., strategy="fsdp")`` 在 torchrun 下用它。

DDP 让每个进程存一份完整的参数、梯度和优化器状态；N 个进程的 FSDP 把它们都切成 N 份，每个进程只存
自己那 1/N（ZeRO-3 的思路）。前向、反向算到某一层时才把这一层的参数从各进程收齐（all-gather），
用完就丢；反向得到的梯度直接“归约并切分”（reduce-scatter）成每个进程自己那一份。数学上与 DDP 相同：
梯度都是各进程平均，所以损失轨迹与单进程（同样的全局批大小）只差浮点舍入。

怎样切（本模块的约定，与 nanoGPT / torchtitan 的做法相同，够用且好懂）：
    1. 模型里每个重复的层——nn.ModuleList 或 nn.Sequential 里带参数的元素（Transformer 的每个块、
       MLP 的每个线性层）——各自 ``fully_shard`` 成一个单元：算到它时收齐，算完就释放；
    2. 最后对根模块 ``fully_shard``：剩下的参数（词嵌入、最后的 LayerNorm、输出层……）归根单元。

``fully_shard`` 把模块的参数换成新的 DTensor 参数对象（每个进程只持有 ``p.to_local()`` 那一片），
所以优化器必须指向新参数。PyTorch 的建议是“分片之后再建优化器”；fit 收到的是建好的优化器（调度器
还挂在它上面），于是 :func:`repoint_optimizer` 把它的 param_groups 改指向新参数，效果相同。

在本项目装的 torch 2.13 CPU 版（gloo 后端）上实测：
    - 能用：fully_shard、前向/反向里的 all-gather 与 reduce-scatter、梯度裁剪（clip_grad_norm_ 认识
      DTensor 梯度）、AdamW 等 torch.optim 优化器、梯度累积（set_requires_gradient_sync）、
      MixedPrecisionPolicy(param_dtype=bfloat16) 也能跑（fit 没有用它，混合精度仍由 autocast 负责）；
    - 不能用：``CPUOffloadPolicy``（把分片放到 CPU、计算时再搬上加速卡）在没有加速卡的机器上报
      "Cannot access accelerator device when none is available"——它本来就是为 GPU 准备的，fit 不用它。
GPU 上（nccl）走同一段代码，不需要改动。
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING

import torch
from torch import nn

# torch.distributed.fsdp 与 torch.distributed.tensor 要带进 sympy 等一大串模块，导入一次约 1 秒；
# 单进程训练和大多数章节都用不到它们，所以在函数里用到时才导入（`import aigc_lib`、每条 aigc 命令都因此快一秒）。
if TYPE_CHECKING:
    from torch.distributed.tensor import DTensor


def shard_model(root: nn.Module, ctx=None) -> nn.Module:
    """按上面的约定把 ``root`` 原地分片，返回它（此后它也是 FSDPModule）。

    ``root`` 是每一步前向都要经过的模块：fit 传入的是“模型 + 一步”的包装，这样自定义的 step 调用
    模型的其他方法时，根单元的参数也已收齐。``ctx`` 是 :class:`~aigc_lib.core.distributed.DistContext`，
    只用来确定设备（GPU 上每个进程一块卡）。
    """
    from torch.distributed.fsdp import fully_shard

    mesh = None
    if ctx is not None:  # 总是按 fit 用的设备建网格：不给的话 PyTorch 在有 GPU 的机器上默认建 GPU 网格，
        from torch.distributed.device_mesh import init_device_mesh  # 哪怕这次是在 CPU 上用 gloo 训练

        mesh = init_device_mesh(ctx.device.type, (ctx.world_size,))
    for layer in repeated_layers(root):
        fully_shard(layer, mesh=mesh)
    fully_shard(root, mesh=mesh)
    return root


def repeated_layers(root: nn.Module) -> list[nn.Module]:
    """nn.ModuleList / nn.Sequential 里带参数的元素，只取最外层的（块里面的 Sequential 随块一起分片）。"""
    chosen: list[str] = []
    for name, module in root.named_modules():
        inside = any(name.startswith(unit + ".") for unit in chosen)
        if inside or not isinstance(module, (nn.ModuleList, nn.Sequential)):
            continue
        chosen += [f"{name}.{child}" if name else child for child, layer in module.named_children()
                   if any(True for _ in layer.parameters())]
    return [root.get_submodule(name) for name in chosen]


def repoint_optimizer(optimizer: torch.optim.Optimizer, before: dict, model: nn.Module) -> None:
    """分片后让 ``optimizer`` 指向 ``model`` 的新（DTensor）参数。

    ``before`` 是分片前记下的 ``{id(旧参数): 参数名}``。优化器里已有状态（续训时从检查点读回的完整张量）
    也一起切成和新参数一样的分片，按新参数存放。
    """
    after = dict(model.named_parameters())
    for group in optimizer.param_groups:
        new_params = []
        for old in group["params"]:
            if id(old) not in before:
                raise ValueError("优化器里有不属于这个模型的参数。用 strategy='fsdp' 时，请用 model.parameters()"
                                 "（或它的分组）建优化器。")
            new = after[before[id(old)]]
            if old in optimizer.state:
                optimizer.state[new] = {k: _shard_like(v, old, new) for k, v in optimizer.state.pop(old).items()}
            new_params.append(new)
        group["params"] = new_params


def _shard_like(value, old: torch.Tensor, new: DTensor):
    """完整的优化器状态张量（与旧参数同形）-> 与新参数同样切法的 DTensor；标量（如 step）原样返回。"""
    from torch.distributed.tensor import distribute_tensor

    if isinstance(value, torch.Tensor) and value.shape == old.shape and value.ndim > 0:
        return distribute_tensor(value.to(new.device), new.device_mesh, new.placements)
    return value


def full_state(state):
    """把 state_dict（模型的或优化器的，可以嵌套）里每个 DTensor 收齐成完整的 CPU 张量。

    每个进程都必须调用（收齐是集合通信），得到的结构与单进程的 ``state_dict()`` 完全一样：检查点可以
    在一个进程里直接加载。（``torch.distributed.checkpoint.state_dict.get_model_state_dict(...,
    full_state_dict=True)`` 做的是同一件事。）
    """
    from torch.distributed.tensor import DTensor

    if isinstance(state, DTensor):
        return state.full_tensor().detach().cpu()
    if isinstance(state, dict):
        return {k: full_state(v) for k, v in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(full_state(v) for v in state)
    return state


def load_full_state(model: nn.Module, state: dict) -> None:
    """把完整的 state_dict 装回分片的模型：每个进程从完整张量里取自己那一片。"""
    from torch.distributed.tensor import DTensor, distribute_tensor

    current = model.state_dict()
    sharded = {k: distribute_tensor(v.to(current[k].device), current[k].device_mesh, current[k].placements)
               if isinstance(current[k], DTensor) else v for k, v in state.items()}
    model.load_state_dict(sharded)


def local_bytes(model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> int:
    """本进程实际存着的参数 + 优化器状态字节数（DTensor 只算本地那一片）。用来对比 DDP 与 FSDP 的显存账。"""
    from torch.distributed.tensor import DTensor

    def nbytes(t: torch.Tensor) -> int:
        t = t.to_local() if isinstance(t, DTensor) else t
        return t.numel() * t.element_size()

    total = sum(nbytes(p) for p in model.parameters())
    if optimizer is not None:
        total += sum(nbytes(v) for state in optimizer.state.values() for v in state.values()
                     if isinstance(v, torch.Tensor))
    return total


@contextmanager
def gathered(root: nn.Module):
    """在这段代码里保持所有参数收齐（不再每次前向都通信）。

    验证时各进程分到的批数可能不同；若每次前向都要 all-gather，批数多的进程会一直等下去。先一次性
    收齐，这里面的前向就是纯本地计算，之后再切回分片。
    """
    from torch.distributed.fsdp import FSDPModule

    units = [m for m in root.modules() if isinstance(m, FSDPModule)]
    for unit in units:
        unit.unshard()
        unit.set_reshard_after_forward(False, recurse=False)
    try:
        yield
    finally:
        for unit in units:
            unit.reshard()
            # 根单元在第一次前向时就被 FSDP 设成“前向后不释放”（反向马上要用）；其余单元恢复默认的释放
            unit.set_reshard_after_forward(unit is not root, recurse=False)


@contextmanager
def no_sync(root: nn.Module, sync: bool):
    """梯度累积中的批次不做 reduce-scatter（``sync=False``），累积到最后一批再同步。"""
    if sync:
        yield
        return
    root.set_requires_gradient_sync(False)
    try:
        yield
    finally:
        root.set_requires_gradient_sync(True)
