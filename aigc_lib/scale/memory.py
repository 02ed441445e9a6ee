"""训练的内存账单：参数、梯度、优化器状态、激活各占多少字节——先用公式算，再用测量对账。

从上往下读：
  1. ``memory_bill``：按每个参数几个字节，算出参数、梯度、优化器状态（和混合精度的主权重），
     再按并行策略（单卡 / DDP / FSDP）分到每个进程；
  2. ``gpt_activation_bytes``：课程自己的 GPT 做一次前向时，autograd 为反向传播存下多少字节；
  3. 测量：``measure_saved_activations``（CPU 也能用：数 autograd 存下的张量）、
     ``measure_training_state``（数参数、梯度、优化器状态张量）、``measure_cuda_peak``（GPU 上的峰值）。

单位一律是字节（B）；1 GiB = 2**30 B。
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable

import torch
from torch import nn

# 每个参数占几个字节：(参数, 梯度, 主权重, 优化器状态的每个"份")。优化器的份数见 OPTIMIZER_STATES。
PRECISIONS = {
    # 全 fp32：参数 4 + 梯度 4；AdamW 的两个矩 m、v 各 4 —— 合计 16 B/参数
    "fp32": dict(param=4, grad=4, master=0, state=4, weight_copy=0),
    # torch.autocast(dtype=torch.bfloat16)，也就是课程的 ``--amp bf16``：参数、梯度、优化器状态
    # 都还是 fp32（16 B/参数，与 fp32 相同），只有矩阵乘法在 bf16 里算。autocast 把权重临时转成 bf16
    # 的副本（2 B/参数），这些副本被 autograd 存下来留给反向传播，一直活到 backward 结束；
    # 省下的是激活：线性层、注意力存的是 bf16（2 字节）而不是 fp32。
    "autocast-bf16": dict(param=4, grad=4, master=0, state=4, weight_copy=2),
    # 纯 bf16 框架（Megatron-LM、DeepSpeed 的 bf16 模式）的做法：参数 bf16 2 + 梯度 bf16 2，
    # 优化器另存一份 fp32 主权重 4 + AdamW 两个 fp32 矩 8 —— 合计 2+2+12 = 16 B/参数
    # （ZeRO 论文 Rajbhandari et al. 2020 的记账：K = 12）。有的实现还把梯度累加成 fp32（再 +4）。
    "bf16-mixed": dict(param=2, grad=2, master=4, state=4, weight_copy=0),
}

# 优化器为每个参数存几份与参数同形状的 fp32 张量
OPTIMIZER_STATES = {"adamw": 2, "sgd-momentum": 1, "sgd": 0}

STRATEGIES = ("single", "ddp", "fsdp")


@dataclass
class MemoryBill:
    """一个进程（一块卡）上训练要的内存，单位字节。``total`` 是各项之和。

    parameters、gradients、optimizer_state（优化器的矩）、master_weights（bf16-mixed 的 fp32 主权重）、
    weight_copies（autocast 转出的 bf16 权重副本）、activations（调用方给的激活字节数）。
    """

    parameters: float
    gradients: float
    optimizer_state: float
    master_weights: float
    weight_copies: float
    activations: float

    @property
    def total(self) -> float:
        return sum(asdict(self).values())

    def as_dict(self) -> dict:
        return {**asdict(self), "total": self.total}


def memory_bill(n_params: int, *, precision: str = "fp32", optimizer: str = "adamw", strategy: str = "single",
                world_size: int = 1, activation_bytes: float = 0) -> MemoryBill:
    """训练一个 ``n_params`` 个参数的模型时，每个进程要多少字节。

    每个参数的字节数（AdamW）::

        precision        参数  梯度  主权重  AdamW m+v  合计      说明
        fp32              4     4     0       8        16
        autocast-bf16     4     4     0       8        16 (+2)   课程的 --amp bf16；+2 是 bf16 权重副本
        bf16-mixed        2     2     4       8        16        纯 bf16 框架 + fp32 主权重

    ``optimizer``：``"adamw"`` 两份 fp32 状态（一阶矩 m、二阶矩 v），``"sgd-momentum"`` 一份（动量），
    ``"sgd"`` 没有。AdamW 另有每个参数张量一个标量 ``step``，字节数可以忽略，这里不计。

    ``strategy``：
      * ``"single"``、``"ddp"``：每个进程都有完整的一份参数、梯度、优化器状态（DDP 只把数据分给各进程，
        每个进程的账单与单卡相同；DDP 通信用的梯度桶在 PyTorch 里默认还要再占约一份梯度，这里不计）。
      * ``"fsdp"``：参数、梯度、优化器状态（和主权重）都切成 ``world_size`` 份，每个进程只存 1/world_size。
        前向、反向时每次临时聚齐一层的完整参数，这一层的临时内存这里不计。

    ``activation_bytes`` 是每个进程自己那份批次的激活（例如 :func:`gpt_activation_bytes` 的结果），原样加上：
    任何策略都不切激活，它只随每个进程的批大小变。

    >>> bill = memory_bill(1_000_000)               # fp32 + AdamW：16 B/参数
    >>> bill.parameters, bill.gradients, bill.optimizer_state, bill.total
    (4000000, 4000000, 8000000, 16000000)
    >>> memory_bill(1_000_000, strategy="fsdp", world_size=8).total
    2000000.0
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r} 无效，只能是 {' | '.join(PRECISIONS)}。")
    if optimizer not in OPTIMIZER_STATES:
        raise ValueError(f"optimizer={optimizer!r} 无效，只能是 {' | '.join(OPTIMIZER_STATES)}。")
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy={strategy!r} 无效，只能是 {' | '.join(STRATEGIES)}。")
    if world_size < 1 or (strategy == "single" and world_size != 1):
        raise ValueError(f"world_size={world_size} 不合适：single 只用 1 个进程，ddp / fsdp 要 world_size >= 1。")
    per = PRECISIONS[precision]
    shard = world_size if strategy == "fsdp" else 1

    def sharded(bytes_per_param: int) -> float:
        return n_params * bytes_per_param / shard if shard > 1 else n_params * bytes_per_param

    return MemoryBill(
        parameters=sharded(per["param"]),
        gradients=sharded(per["grad"]),
        optimizer_state=sharded(per["state"] * OPTIMIZER_STATES[optimizer]),
        master_weights=sharded(per["master"]),
        # autocast 的 bf16 副本由（FSDP 临时聚齐的）完整权重转出，存给反向用，所以按完整一份记
        weight_copies=n_params * per["weight_copy"],
        activations=activation_bytes,
    )


# ---------------------------------------------------------------------------
# 2. 激活：课程的 GPT 做一次前向，autograd 存下多少字节
# ---------------------------------------------------------------------------
#
# 反向传播要用前向的中间结果，autograd 在前向时把它们存下（"saved tensors"）。逐个数
# GPTLanguageModel（models/transformer.py）里每个运算存了什么。记号：B 批大小、T 序列长、C = d_model、
# F = dim_feedforward（默认 4C）、H 头数、V 词表大小；b = 激活的字节数（fp32 为 4），s = 4（LayerNorm 的
# 均值/倒数标准差和注意力的 logsumexp 总是 fp32），m = dropout 掩码每个元素的字节数。
#
#   词向量、位置      Embedding 存编号：tokens 8BT，位置 arange 8T；dropout（p > 0）存掩码 BTC·m
#   每一层（共 L 层）
#     LN1             输入 x：BTC·b，均值和 1/std：2BT·s
#     q、k、v 投影     三个 Linear 共用输入 LN1(x)，只存一份：BTC·b
#     注意力（融合）   F.scaled_dot_product_attention 存 q、k、v 与输出：4BTC·b，logsumexp：BHT·s；
#                     输出在内存里本来就是 (B, T, H, hs) 的排列，拼回各头只是视图，out_proj 存的就是它
#     注意力（手写）   CPU 上 dropout > 0 时 PyTorch 改走数学实现：q、k、v 的副本 3BTC·b，
#                     softmax 的结果 BHT²·b，dropout 掩码 BHT²·m 和 dropout 后的权重 BHT²·b；
#                     输出要转置拷贝一次才能拼回各头，out_proj 存这份拷贝 BTC·b
#     out_proj         残差上的 dropout 掩码 BTC·m
#     LN2             输入 BTC·b + 2BT·s
#     MLP             第一层输入 BTC·b，GELU 的输入 BTF·b，第二层输入 BTF·b；残差 dropout 掩码 BTC·m
#   最后             LN：BTC·b + 2BT·s；输出层的输入 BTC·b（权重是参数，不算）
#   损失             cross_entropy = log_softmax + nll：存 log_softmax 的结果 BTV·4、目标 8BT、一个标量权重 4
#
# F = 4C、不用 dropout 时每层是 (1+1+4+1+1+8)·BTC = 16·BTC 个数，再加 4BT + BHT 个 fp32。
# 打开激活检查点后每层只存它的输入 x：BTC·b（反向时重算这一层，重算时临时多出一层的激活，这里不计）。
# 注意力若走手写路径，BHT² 随序列长度平方增长——这正是 FlashAttention 这类融合内核省下的内存。


def gpt_activation_bytes(batch: int, seq_len: int, d_model: int, num_layers: int, num_heads: int, vocab_size: int,
                         *, dim_feedforward: int | None = None, dtype_bytes: int = 4, dropout: float = 0.0,
                         device_type: str = "cpu", include_loss: bool = True,
                         checkpoint_activations: bool = False) -> int:
    """课程的 :class:`~aigc_lib.models.GPTLanguageModel` 训练时一次前向存下的激活字节数（推导见上面的注释）。

    参数与模型相同（``dim_feedforward`` 默认 4·d_model）；``dtype_bytes`` 激活每个数几个字节（fp32 为 4）；
    ``dropout`` > 0 时多出 dropout 掩码；``device_type``：
      * ``"cpu"``：dropout = 0 时注意力走融合内核；dropout > 0 时 PyTorch 在 CPU 上改走数学实现
        （存 T×T 的注意力矩阵）；dropout 掩码是浮点数（每个 dtype_bytes 字节）；
      * ``"cuda"``：注意力总走融合内核（FlashAttention / memory-efficient，dropout 在内核里按随机种子重算，
        不存掩码）；其余 dropout 的掩码是布尔值（1 字节）。这一支按 PyTorch 的 CUDA 实现推出，只在有 GPU 时由测试对照
        ``torch.cuda.memory_allocated`` 检查（tests/test_scale_memory.py）。
    ``include_loss``：是否算上交叉熵存的 log_softmax（B·T·V 个 fp32，词表大时不小）。
    ``checkpoint_activations``：每层只存输入。

    >>> gpt_activation_bytes(2, 8, 16, 1, 2, 50, include_loss=False)     # 1 层、不用 dropout
    19136
    """
    if device_type not in ("cpu", "cuda"):
        raise ValueError(f"device_type={device_type!r} 无效，只能是 cpu | cuda。")
    B, T, C, H, V, L = batch, seq_len, d_model, num_heads, vocab_size, num_layers
    F = dim_feedforward or 4 * d_model
    b, s = dtype_bytes, 4
    m = 0 if dropout == 0 else (b if device_type == "cpu" else 1)
    fused_attention = device_type == "cuda" or dropout == 0

    total = 8 * B * T + 8 * T + B * T * C * m  # 编号、位置、词向量后的 dropout 掩码
    if checkpoint_activations:
        per_layer = B * T * C * b
    else:
        per_layer = (B * T * C * b + 2 * B * T * s  # LN1
                     + B * T * C * b)  # q、k、v 投影共用的输入
        if fused_attention:
            per_layer += 4 * B * T * C * b + B * H * T * s  # q、k、v、输出、logsumexp
        else:
            per_layer += 3 * B * T * C * b + B * H * T * T * b  # q、k、v 的副本、softmax 结果
            per_layer += B * H * T * T * (m + b)  # 注意力 dropout 的掩码和 dropout 后的权重
            per_layer += B * T * C * b  # out_proj 的输入：拼回各头的那份拷贝
        per_layer += (B * T * C * m  # 残差 dropout
                      + B * T * C * b + 2 * B * T * s  # LN2
                      + B * T * C * b + 2 * B * T * F * b  # MLP 两层的输入与 GELU 的输入
                      + B * T * C * m)  # 残差 dropout
    total += L * per_layer
    total += B * T * C * b + 2 * B * T * s + B * T * C * b  # 最后的 LN 和输出层的输入
    if include_loss:
        total += B * T * V * 4 + 8 * B * T + 4  # log_softmax 的结果（fp32）、目标编号、nll 的总权重
    return total


# ---------------------------------------------------------------------------
# 3. 测量
# ---------------------------------------------------------------------------


def _storage_key(tensor: torch.Tensor) -> tuple:
    storage = tensor.untyped_storage()
    return (tensor.device.type, storage.data_ptr()), storage.nbytes()


def measure_saved_activations(model: nn.Module, inputs_fn: Callable[[], tuple],
                              loss_fn: Callable[[torch.Tensor], torch.Tensor] | None = None) -> int:
    """做一次前向，数 autograd 为反向传播存下的张量一共占多少字节（CPU、GPU 都能用）。

    ``inputs_fn()`` 返回模型的位置参数（一个元组），前向是 ``model(*inputs)``；给了 ``loss_fn`` 时再算
    ``loss_fn(output)``，把损失存下的张量也算进去。模型保持调用方设好的模式（要测训练时的激活，先 ``model.train()``）。

    做法：在 ``torch.autograd.graph.saved_tensors_hooks`` 里，每存一个张量就记下它的存储；同一块存储
    （一个张量和它的视图、被几个运算同时存下的张量）只算一次，模型的参数和缓冲区不算——它们不是激活。
    算的是整块存储的字节数，因为视图让整块存储活着。
    """
    inputs = inputs_fn()
    state = {_storage_key(t)[0] for t in list(model.parameters()) + list(model.buffers())}
    saved: dict[tuple, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        key, nbytes = _storage_key(tensor)
        if key not in state:
            saved[key] = nbytes
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        output = model(*inputs)
        if loss_fn is not None:
            loss_fn(output)
    return sum(saved.values())


def measure_training_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """数出参数、梯度和优化器状态实际占的字节（在至少一步 ``optimizer.step()`` 之后调用）。

    返回 ``{"parameters", "gradients", "optimizer_state", "optimizer_other"}``：optimizer_state 是与参数同形状的
    状态（AdamW 的 m、v，SGD 的动量），optimizer_other 是其余的（AdamW 每个参数张量一个标量 ``step``）。
    共用的参数（例如 GPT 输出层与词向量共用的矩阵）只算一次。
    """
    params = list(model.parameters())  # parameters() 本身就去掉了重复的共用参数
    result = {"parameters": sum(p.nbytes for p in params),
              "gradients": sum(p.grad.nbytes for p in params if p.grad is not None),
              "optimizer_state": 0, "optimizer_other": 0}
    for param, state in optimizer.state.items():
        for value in state.values():
            if isinstance(value, torch.Tensor):
                kind = "optimizer_state" if value.shape == param.shape else "optimizer_other"
                result[kind] += value.nbytes
    return result


def measure_cuda_peak(fn: Callable[[], object], device: torch.device | str | None = None) -> int:
    """在 GPU 上运行 ``fn()``，返回运行期间显存峰值比开始时多出的字节数。

    用 ``torch.cuda.reset_peak_memory_stats`` 清零峰值，``torch.cuda.max_memory_allocated`` 读峰值，减去开始时
    已经分配的（模型、优化器状态等）。算的是 PyTorch 分配出去的张量，不含缓存分配器留着没用的块和 CUDA 上下文。
    """
    if not torch.cuda.is_available():
        raise RuntimeError("measure_cuda_peak 需要 GPU；CPU 上请用 measure_saved_activations 数激活。")
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    start = torch.cuda.memory_allocated(device)
    fn()
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) - start
