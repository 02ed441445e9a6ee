"""把训练好的模型变小、变快：剪枝、int8 动态量化、知识蒸馏，以及量“多大、多快”的工具。

第 12 章的流程::

    from aigc_lib.compress import (magnitude_prune, sparsity, make_permanent, quantize_dynamic_int8,
                                   distillation_loss, model_size_bytes, measure_latency, count_parameters)

    magnitude_prune(model, amount=0.5)             # 把绝对值最小的 50% 权重置 0（掩码形式）
    sparsity(model)["prunable"]                     # -> 0.5
    make_permanent(model)                           # 去掉掩码，零直接写进权重
    q = quantize_dynamic_int8(model.cpu())          # Linear / LSTM / GRU 权重变成 int8，只在 CPU 上跑
    model_size_bytes(q) / model_size_bytes(model)   # 磁盘大小之比
    measure_latency(q, example_inputs)              # {"median_ms": ..., "p90_ms": ...}
    loss = distillation_loss(student(x), teacher(x), y, temperature=2.0, alpha=0.5)

本模块只依赖 PyTorch，可以单独复制使用。
"""

from __future__ import annotations

import io
import math
import statistics
import time
import warnings

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.nn.utils.prune as prune

from .core.runtime import eval_mode

# ---------------------------------------------------------------------------
# 剪枝：把“不重要”（绝对值小）的权重置 0
# ---------------------------------------------------------------------------

# nn.RNNBase 包括 RNN、LSTM、GRU；注意力层的输出投影 out_proj 是一个 nn.Linear，随 nn.Linear 一起剪
PRUNABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.RNNBase, nn.MultiheadAttention)


def _weight_names(module: nn.Module) -> list[str]:
    """一个模块里要剪的权重名。偏置不剪。

    RNN 家族是 weight_ih_l0、weight_hh_l0……；注意力层是 Q/K/V 的输入投影 in_proj_weight
    （kdim/vdim 不同时是 q_proj_weight 等三个）；其余是 weight。
    """
    if isinstance(module, nn.RNNBase):
        return [name for name in module._flat_weights_names if name.startswith("weight_")]
    if isinstance(module, nn.MultiheadAttention):
        names = ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight")
        return [name for name in names if getattr(module, name, None) is not None]
    return ["weight"] if getattr(module, "weight", None) is not None else []


def _refresh_pruned_weights(model: nn.Module, inputs) -> None:
    """模型每次前向之前，把所有被剪的权重重新算成 ``原权重 * 掩码``。

    prune 只在“拥有该权重的模块”自己前向时更新它。可注意力层的 out_proj.weight 是由外层
    nn.MultiheadAttention 直接读取的，Transformer 层在 eval 下的快速路径也直接读取各层权重，
    它们自己的 forward 从不被调用：不刷新的话会读到过期的权重，训练时还会报
    “Trying to backward through the graph a second time”。
    """
    for module in model.modules():
        for hook in list(module._forward_pre_hooks.values()):
            if isinstance(hook, prune.BasePruningMethod):
                hook(module, inputs)  # 就是 prune 自己的钩子：setattr(module, name, orig * mask)


def _prunable_weights(model: nn.Module, modules=PRUNABLE) -> list[tuple[str, nn.Module, str]]:
    """找出所有要剪的权重：``[(完整名字, 所在模块, 参数名), ...]``，例如 ``("fc.weight", fc, "weight")``。"""
    found = []
    for module_name, module in model.named_modules():
        if isinstance(module, tuple(modules)):
            for name in _weight_names(module):
                found.append((f"{module_name}.{name}" if module_name else name, module, name))
    return found


def magnitude_prune(
    model: nn.Module,
    amount: float,
    structured: bool = False,
    dim: int = 0,
    modules=PRUNABLE,
) -> nn.Module:
    """按绝对值大小剪枝（原地修改并返回 model），用的是 ``torch.nn.utils.prune``。

    参数：
        model：任意 ``nn.Module``。
        amount：剪掉的比例，0 <= amount < 1。
        structured：
            - False（非结构化）：把所有选中权重放在一起比较（全局 L1），绝对值最小的
              ``amount`` 比例置 0。不同层剪掉的比例可以不同：不重要的层剪得多。
            - True（结构化）：每个权重张量里，按 L1 范数剪掉 ``amount`` 比例的整行
              （``dim=0``：输出神经元）或整列（``dim=1``：输入特征）。整行为 0 才可能真正把矩阵变小、变快。
        dim：结构化剪枝沿哪一维剪。
        modules：剪哪些类型的模块，默认 Linear、Conv1d、Conv2d、RNN/LSTM/GRU 和注意力层的全部权重
            （不剪偏置，也不剪嵌入层）。

    剪枝以“原权重 + 掩码”的形式存在（``weight_orig`` 和 ``weight_mask``），继续训练时被剪的位置
    保持为 0；确定之后调用 ``make_permanent(model)``。对同一个模型再调用一次，会在**剩下的**权重里
    再剪 ``amount`` 比例（迭代剪枝）。注意：置 0 不会让文件变小或推理变快，除非再用稀疏存储或
    真正删掉整行。

    >>> model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
    >>> round(sparsity(magnitude_prune(model, 0.5))["prunable"], 2)
    0.5
    """
    if not 0.0 <= amount < 1.0:
        raise ValueError(f"amount={amount} 不合法：剪枝比例应满足 0 <= amount < 1，例如 0.5 表示剪掉一半。")
    targets = _prunable_weights(model, modules)
    if not targets:
        kinds = ", ".join(m.__name__ for m in modules)
        raise ValueError(f"模型里没有可剪的层（{kinds}）：请检查 modules 参数，或确认模型里有这些层。")
    if structured:
        for _, module, name in targets:
            prune.ln_structured(module, name, amount=amount, n=1, dim=dim)
    else:
        pairs = [(module, name) for _, module, name in targets]
        prune.global_unstructured(pairs, pruning_method=prune.L1Unstructured, amount=amount)
    if _refresh_pruned_weights not in model._forward_pre_hooks.values():
        model.register_forward_pre_hook(_refresh_pruned_weights)
    return model


def _effective_tensors(model: nn.Module):
    """逐个给出模型“实际使用”的参数：被剪的参数给 ``原权重 * 掩码``，名字与 make_permanent 后相同。"""
    for module_name, module in model.named_modules():
        prefix = f"{module_name}." if module_name else ""
        for name, param in module.named_parameters(recurse=False):
            mask = getattr(module, name[: -len("_orig")] + "_mask", None) if name.endswith("_orig") else None
            if mask is not None:
                yield prefix + name[: -len("_orig")], param.detach() * mask
            else:
                yield prefix + name, param.detach()


def sparsity(model: nn.Module, modules=PRUNABLE) -> dict:
    """统计模型里有多少比例的参数是 0。剪枝前、剪枝后、make_permanent 之后都能用。

    返回一个字典：
        ``"overall"``：全部参数（含偏置、嵌入等）中 0 的比例。
        ``"prunable"``：``magnitude_prune`` 会剪的那些权重（同一个 ``modules``）中 0 的比例，
            用来核对“要求剪 50%，是否真剪了 50%”。
        ``"per_tensor"``：``{参数名: 0 的比例}``，参数名是 ``make_permanent`` 之后 ``state_dict`` 里的名字，
            如 ``"0.weight"``（剪枝之后、``make_permanent`` 之前，``state_dict`` 里存的是 ``"0.weight_orig"`` 和
            ``"0.weight_mask"``，这里报告的是两者相乘、真正参与计算的那个权重）。
        ``"zeros"``、``"total"``：全部参数里 0 的个数和参数总数。

    >>> sparsity(nn.Linear(4, 2))["overall"]
    0.0
    """
    counts = {name: (int((t == 0).sum()), t.numel()) for name, t in _effective_tensors(model)}
    chosen = [full for full, _, _ in _prunable_weights(model, modules)]
    zeros, total = sum(z for z, _ in counts.values()), sum(n for _, n in counts.values())
    p_zero, p_total = sum(counts[n][0] for n in chosen), sum(counts[n][1] for n in chosen)
    return {
        "overall": zeros / total if total else 0.0,
        "prunable": p_zero / p_total if p_total else 0.0,
        "per_tensor": {name: z / n if n else 0.0 for name, (z, n) in counts.items()},
        "zeros": zeros,
        "total": total,
    }


def make_permanent(model: nn.Module) -> nn.Module:
    """去掉剪枝掩码，把 0 直接写进权重（原地修改并返回 model）。

    之后 ``state_dict`` 的键名与剪枝前相同（``weight`` 而不是 ``weight_orig`` + ``weight_mask``），
    可以用原来的模型类加载；继续训练时被剪的位置不再强制为 0。
    """
    for key, hook in list(model._forward_pre_hooks.items()):
        if hook is _refresh_pruned_weights:
            del model._forward_pre_hooks[key]
    for module in model.modules():
        hooks = [h for h in module._forward_pre_hooks.values() if isinstance(h, prune.BasePruningMethod)]
        for hook in hooks:
            prune.remove(module, hook._tensor_name)
        if hooks and isinstance(module, nn.RNNBase):
            module.flatten_parameters()  # 让 cuDNN 重新拿到连续存放的权重，否则 GPU 上每步都会警告
    return model


# ---------------------------------------------------------------------------
# int8 动态量化：权重存成 int8，激活在运行时按需量化（只在 CPU 上）
# ---------------------------------------------------------------------------


def _pick_quantized_engine(engine: str | None) -> str:
    """选量化后端：x86 / fbgemm（Intel、AMD 的 CPU）或 qnnpack（ARM，如 Apple 芯片、手机）。"""
    supported = torch.backends.quantized.supported_engines
    if engine is None:
        current = torch.backends.quantized.engine
        if current in supported and current != "none":
            return current
        engine = next((e for e in ("x86", "fbgemm", "qnnpack", "onednn") if e in supported), None)
    if engine is None or engine not in supported:
        raise RuntimeError(
            f"这个 PyTorch 不支持量化后端 {engine!r}（支持的有 {supported}）。"
            "请换用官方发布的 CPU 版 PyTorch，或跳过量化这一节。"
        )
    return engine


def quantize_dynamic_int8(
    model: nn.Module,
    modules=(nn.Linear, nn.LSTM, nn.GRU),
    engine: str | None = None,
) -> nn.Module:
    """返回模型的 int8 动态量化副本（原模型不变），用于 CPU 推理。

    ``modules`` 里这些层的权重被存成 int8（每个数 1 字节，原来 4 字节），前向时激活临时量化为
    int8 做矩阵乘法，所以文件约小到 1/4，CPU 上的矩阵乘法通常更快；嵌入层、LayerNorm 等保持 float。
    量化后的模型只能推理，不能训练，也只能在 CPU 上运行。

    参数：
        model：在 CPU 上的 float 模型（GPU 上训练的，先 ``model.cpu()``）。剪过枝的模型先 ``make_permanent``，
            否则抛 ``ValueError``。
        modules：要量化的层类型。
        engine：量化后端，None 时自动选择本机支持的（x86 / fbgemm / qnnpack）。

    >>> q = quantize_dynamic_int8(nn.Sequential(nn.Linear(8, 4)))
    >>> q(torch.randn(2, 8)).shape
    torch.Size([2, 4])
    """
    if prune.is_pruned(model):
        raise ValueError(
            "模型还带着剪枝的掩码（weight_orig + weight_mask，weight 是每次前向现算的）：量化前请先 "
            "make_permanent(model) 把 0 写进权重。"
        )
    for name, tensor in list(model.named_parameters()) + list(model.named_buffers()):
        if tensor.device.type != "cpu":
            raise RuntimeError(
                f"参数 {name} 在 {tensor.device} 上，但 int8 动态量化只支持 CPU："
                "请先把模型搬到 CPU，例如 quantize_dynamic_int8(copy.deepcopy(model).cpu())。"
            )
    try:
        from torch.ao.quantization import quantize_dynamic
    except ImportError as error:  # 未来的 PyTorch 可能把它移到 torchao
        raise RuntimeError(
            "当前 PyTorch 里没有 torch.ao.quantization.quantize_dynamic："
            "请安装 2.2 到 2.13 之间的 PyTorch，或改用 torchao 库的量化接口。"
        ) from error
    torch.backends.quantized.engine = _pick_quantized_engine(engine)
    # quantize_dynamic 只替换子模块：模型本身就是一个 nn.Linear / nn.LSTM 时，先包一层再取出来
    wrapped = isinstance(model, tuple(modules))
    root = nn.Sequential(model) if wrapped else model
    with warnings.catch_warnings():
        # PyTorch 2.10 起这里会打印一大段“迁移到 torchao”的弃用提示；功能仍然可用，课程里另有说明
        warnings.filterwarnings("ignore", message=".*torch.ao.quantization is deprecated.*")
        warnings.filterwarnings("ignore", message=".*quantize_per_tensor.*deprecated.*")
        quantized = quantize_dynamic(root, set(modules), dtype=torch.qint8)
    return quantized[0] if wrapped else quantized


# ---------------------------------------------------------------------------
# 知识蒸馏：小模型（学生）学大模型（教师）的软标签
# ---------------------------------------------------------------------------


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    target: torch.Tensor | None = None,
    temperature: float = 2.0,
    alpha: float = 0.5,
) -> torch.Tensor:
    """Hinton 等 (2015) 的蒸馏损失：``alpha * T² * KL(p_teacher || p_student) + (1 - alpha) * CE``。

    ``p = softmax(logits / T)``：温度 T > 1 让分布更“软”，教师对错误类别的细微偏好（“这条差评有点像
    好评”）也能传给学生。乘 T² 是因为软目标的梯度随 1/T² 变小，这样换温度时不必重调 alpha。

    参数：
        student_logits：学生输出，形状 ``(N, C)`` 或 ``(..., C)``。
        teacher_logits：教师输出，形状相同；内部会 ``detach``，梯度不会流回教师。
        target：真实标签，形状 ``(N,)`` 或 ``(...)``；为 None（无标注数据）时必须 ``alpha=1``。
        temperature：温度 T > 0。
        alpha：软标签部分的权重，0 <= alpha <= 1；alpha=1 时只学教师。

    返回：标量张量。学生与教师输出相同且 alpha=1 时恰好为 0。

    >>> logits = torch.randn(4, 3)
    >>> distillation_loss(logits, logits, alpha=1.0).item()
    0.0
    """
    if temperature <= 0:
        raise ValueError(f"temperature={temperature} 不合法：温度必须 > 0，常用 1 到 4。")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha={alpha} 不合法：应在 0 到 1 之间（软标签部分的权重）。")
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"学生输出形状 {tuple(student_logits.shape)} 与教师输出形状 {tuple(teacher_logits.shape)} 不同："
            "两者必须对同一批数据、同一组类别给出 logits。"
        )
    if target is None and alpha != 1.0:
        raise ValueError("没有 target 时只能学教师的软标签：请传 alpha=1.0，或者提供真实标签 target。")
    C = student_logits.shape[-1]
    T = float(temperature)
    dtype = torch.promote_types(student_logits.dtype, torch.float32)  # 至少 float32：混合精度下也稳定
    s = student_logits.reshape(-1, C).to(dtype)  # (M, C)
    t = teacher_logits.detach().reshape(-1, C).to(dtype)  # (M, C)
    log_p_student = F.log_softmax(s / T, dim=-1)
    log_p_teacher = F.log_softmax(t / T, dim=-1)
    # KL(p_t || p_s) = sum p_t * (log p_t - log p_s)，按样本平均（batchmean 才是数学上的 KL）
    soft = F.kl_div(log_p_student, log_p_teacher, log_target=True, reduction="batchmean") * T * T
    if alpha == 1.0:
        return soft
    hard = F.cross_entropy(s, target.reshape(-1))
    return alpha * soft + (1.0 - alpha) * hard


# ---------------------------------------------------------------------------
# 度量：参数量、磁盘大小、推理延迟
# ---------------------------------------------------------------------------


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """参数个数（元素总数）。``trainable_only=True`` 时只数 ``requires_grad`` 的参数（冻结的不算）。

    注意：量化后的 Linear / LSTM 把权重打包存放，不再是 ``nn.Parameter``，不计入这里；比较量化前后
    请用 ``model_size_bytes``。

    >>> count_parameters(nn.Linear(10, 3))   # 10 * 3 + 3
    33
    """
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def model_size_bytes(model: nn.Module) -> int:
    """模型 ``state_dict`` 用 ``torch.save`` 存盘后的字节数（写进内存里的 BytesIO，不碰硬盘）。

    与 ``torch.save(model.state_dict(), "archive.pt")`` 的文件大小完全相同；换个文件名会差几十个字节，
    因为 torch.save 把文件名写进了 zip 里的目录名。

    >>> model_size_bytes(nn.Linear(1000, 1000)) > 4 * 1000 * 1000   # float32 每个数 4 字节
    True
    """
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getbuffer().nbytes


def _first_tensor(obj):
    """在（可能嵌套的）输入里找第一个张量，用来判断输入在哪个设备上。"""
    if isinstance(obj, torch.Tensor):
        return obj
    values = obj.values() if isinstance(obj, dict) else obj if isinstance(obj, (list, tuple)) else ()
    for value in values:
        found = _first_tensor(value)
        if found is not None:
            return found
    return None


def measure_latency(model: nn.Module, example_inputs, repeats: int = 50, warmup: int = 5) -> dict:
    """测一次前向推理要多少毫秒（在 ``torch.inference_mode`` 和 ``model.eval()`` 下）。

    参数：
        model：要测的模型；输入与模型需已在同一设备上。
        example_inputs：一个张量（调用 ``model(x)``）、一个元组（``model(*inputs)``，例如
            ``(tokens, lengths)``）或一个字典（``model(**inputs)``）。
        repeats：计时的次数，取中位数，不受偶尔的系统抖动影响。
        warmup：先跑几次不计时：第一次调用要分配内存、选算法，会慢很多。

    返回：``{"median_ms": 中位数, "p90_ms": 90% 分位数, "repeats": repeats}``。
    在 CUDA 上每次计时前后都 ``synchronize``，否则量到的只是把任务交给 GPU 的时间。
    函数结束时恢复模型原来的 train / eval 状态。

    >>> stats = measure_latency(nn.Linear(16, 4), torch.randn(8, 16), repeats=5, warmup=1)
    >>> stats["median_ms"] <= stats["p90_ms"]
    True
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats={repeats}、warmup={warmup} 不合法：需要 repeats >= 1、warmup >= 0。")
    if isinstance(example_inputs, dict):
        call = lambda: model(**example_inputs)  # noqa: E731
    elif isinstance(example_inputs, (tuple, list)):
        call = lambda: model(*example_inputs)  # noqa: E731
    else:
        call = lambda: model(example_inputs)  # noqa: E731
    probe = _first_tensor(example_inputs)
    dev_type = probe.device.type if probe is not None else "cpu"

    def sync() -> None:
        if dev_type == "cuda":
            torch.cuda.synchronize(probe.device)
        elif dev_type == "mps":
            torch.mps.synchronize()

    times_ms = []
    with eval_mode(model):
        with torch.inference_mode():
            for _ in range(warmup):
                call()
            for _ in range(repeats):
                sync()
                start = time.perf_counter()
                call()
                sync()
                times_ms.append((time.perf_counter() - start) * 1000.0)
    times_ms.sort()
    p90 = times_ms[math.ceil(0.9 * len(times_ms)) - 1]  # 最近秩法：不插值，一定是某一次测到的值
    return {"median_ms": statistics.median(times_ms), "p90_ms": p90, "repeats": repeats}
