"""一个 fit 训练所有模型：分类器、序列标注、语言模型、seq2seq 用的是同一个循环。

各种模型唯一的区别是“一个批次怎么变成损失”，所以那是唯一的钩子::

    history = fit(model, train_loader, val_loader, epochs=5,
                  optimizer=torch.optim.AdamW(model.parameters(), lr=1e-3),
                  loss_fn=nn.CrossEntropyLoss(),                 # 或 step=...
                  metrics={"accuracy": accuracy_score})           # 在整个验证集上算
    history.plot(); history.best("val_loss")

批次的约定：DataLoader 给出元组/列表，最后一个元素是目标，前面的都是模型输入。
    分类：(tokens, lengths, labels)，model(tokens, lengths) -> (B, C) logits
    语言模型：(x, y)，model(x) -> (B, T, V) logits；默认损失会把 B、T 两维摊平
默认一步就是 ``outputs = model(*inputs); loss = loss_fn(outputs, target)``。损失不是
(outputs, target) 的函数时（CRF 负对数似然、skip-gram），传 ``step(model, batch)``，返回 loss，
或返回 (loss, outputs, target) 以便算验证指标。

fit 负责其余一切：设备、混合精度、梯度裁剪与累积、按优化步调整学习率、早停、检查点与续训、
NaN 检查、Ctrl-C、torchrun 多进程（见 distributed.py）、进度条和训练记录 History。
"""

from __future__ import annotations

import difflib
import math
import os
import shutil
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F
from torch.optim.lr_scheduler import ReduceLROnPlateau

from . import distributed, fsdp
from .checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from .history import History, _infer_mode
from .runtime import compile_problem, cpu_bf16_fast, cuda_bf16_native
from ..plotting import progress, progress_mode
from .schedules import warmup_cosine, warmup_linear  # noqa: F401  （从 training 也能导入调度器）


def steps_per_epoch(loader, accumulate: int = 1) -> int:
    """每轮有几个优化步：批次数 / accumulate（向上取整，最后不满的一组也更新一次）。

    在 torchrun 下按“每个进程分到的批次数”计算，所以同一个脚本单进程、多进程都算得对。
    例：``total = steps_per_epoch(train_loader, accumulate=4) * epochs``
    """
    world = int(os.environ.get("WORLD_SIZE", "1")) if distributed.launched_by_torchrun() else 1
    return -(-distributed.batches_per_rank(loader, world) // accumulate)


class NonFiniteLossError(FloatingPointError):
    """损失变成了 NaN 或无穷大，继续训练没有意义。``where`` 是出事的位置（“第 2 轮第 3 批（……）”），
    ``value`` 是那个损失值：调用 fit 的程序（例如 ``aigc`` 命令）可以用它们写自己的建议。"""

    def __init__(self, message: str, where: str = "", value: float = float("nan")) -> None:
        super().__init__(message)
        self.where, self.value = where, value


# ---------------------------------------------------------------- 一个批次 -> 损失


def move_to_device(batch, device: torch.device):
    """把批次里的张量（可以嵌套在元组、列表、字典里）搬到 device，其余原样返回。"""
    if isinstance(batch, torch.Tensor):
        # GPU 上用 non_blocking：配合 pin_memory=True，拷贝与计算可以重叠
        return batch.to(device, non_blocking=device.type == "cuda")
    if isinstance(batch, dict):
        return {k: move_to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        moved = [move_to_device(v, device) for v in batch]
        return type(batch)(*moved) if hasattr(batch, "_fields") else type(batch)(moved)  # namedtuple 也行
    return batch


def flat_cross_entropy(outputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """默认损失：把 logits 的最后一维当类别，其余维摊平后算交叉熵；目标为 -100 的位置忽略。

    分类 (B, C) 与 (B,)、语言模型 (B, T, V) 与 (B, T) 都适用。
    """
    return F.cross_entropy(outputs.reshape(-1, outputs.shape[-1]), target.reshape(-1))


def _default_predict(outputs, target):
    """logits 比目标多一维（分类、逐词标注、语言模型）时取 argmax，否则把输出当作预测。"""
    if torch.is_floating_point(outputs) and outputs.ndim == target.ndim + 1:
        return outputs.argmax(-1)
    return outputs


def _count_items(target) -> int:
    """一个批次算几个样本：目标的第一维（分类是句子数，语言模型是序列数）。"""
    if isinstance(target, torch.Tensor):
        return target.shape[0] if target.ndim else 1
    return len(target) if isinstance(target, (list, tuple)) else 1


def resolve_amp(amp, dev: torch.device):
    """amp 设置 -> autocast 的 dtype（None 表示不用混合精度）；这台设备用不了时抛 ``ValueError``。

    ``fit`` 开始时调用它；想在准备数据之前就发现设置不对（例如命令行），可以先自己调用一次。
    """
    choice = "off" if amp in (None, False) else str(amp).lower()
    if choice == "off":
        return None
    if choice == "auto":
        if dev.type == "cuda":
            return torch.bfloat16 if cuda_bf16_native() else torch.float16
        if dev.type == "cpu":  # 没有 AVX-512 / AMX 的 CPU 上 bf16 是模拟的，比 float32 慢好几倍：不开
            return torch.bfloat16 if cpu_bf16_fast() else None
        return None  # mps：自动模式下不开
    if choice == "bf16":
        if dev.type == "cuda" and not cuda_bf16_native():
            raise ValueError("这块 GPU 没有原生的 bf16（计算能力 8.0 以下，如 T4、V100；模拟的 bf16 比 float32 还慢）。"
                             "请用 amp='fp16'（会自动配 GradScaler）或 amp='auto'。")
        return torch.bfloat16
    if choice == "fp16":
        if dev.type == "cpu":
            raise ValueError("CPU 上的混合精度只能用 bf16 或 auto（命令行 --amp bf16，Python 里 amp='bf16'）；fp16 需要 GPU。")
        if dev.type != "cuda":  # GradScaler 只在 CUDA 上配：没有它，fp16 的小梯度会下溢成 0
            raise ValueError(f"{dev.type} 上的 fp16 混合精度没有配损失缩放（GradScaler），小梯度会下溢成 0："
                             "请用 amp='off'。")
        return torch.float16
    raise ValueError(f"amp 只能是 'off'、'bf16'、'fp16' 或 'auto'，收到 {amp!r}。")


class _LossStep:
    """默认的一步：``outputs = model(*inputs); loss = loss_fn(outputs, target)``，返回三者。"""

    def __init__(self, loss_fn=None) -> None:
        self.loss_fn = loss_fn if loss_fn is not None else flat_cross_entropy

    def __call__(self, model, batch):
        if not isinstance(batch, (tuple, list)) or len(batch) < 2:
            raise TypeError(
                "默认的一步要求每个批次是 (输入1, ..., 目标) 这样的元组或列表，最后一个元素是目标；"
                f"收到 {type(batch).__name__}。请调整 Dataset/collate_fn，或传入 step=自定义函数。"
            )
        *inputs, target = batch
        outputs = model(*inputs)
        return self.loss_fn(outputs, target), outputs, target


class _StepModule(nn.Module):
    """把“模型 + 一步”包成一个模块：``forward(batch) = step(model, batch)``。

    DDP 只在它自己的 forward 里安排反向传播时的梯度同步，所以多进程时被 DDP 包住的是这个模块，
    而 step 拿到的仍是原模型（不用写 ``model.module``），梯度照样同步。参数就是原模型的参数。
    """

    def __init__(self, model: nn.Module, step) -> None:
        super().__init__()
        self.model, self.step = model, step

    def forward(self, batch):
        return self.step(self.model, batch)


def _unpack_step_output(out, batch):
    """step 的返回值 -> (loss, outputs, target)；只返回 loss 时 outputs 为 None，目标取 batch[-1]。"""
    if isinstance(out, (tuple, list)):
        if len(out) != 3:
            raise ValueError("step(model, batch) 应返回 loss，或 (loss, outputs, target) 三个值。")
        loss, outputs, target = out
    else:
        loss, outputs = out, None
        target = batch[-1] if isinstance(batch, (tuple, list)) else None
    if not isinstance(loss, torch.Tensor) or loss.ndim != 0:
        raise ValueError(
            "损失必须是一个标量张量（0 维）。若 loss_fn 用了 reduction='none'，请先 .mean()；"
            f"收到 {type(loss).__name__}{tuple(getattr(loss, 'shape', ()))}。"
        )
    return loss, outputs, target


class _StepRunner:
    """一个批次 -> (loss, outputs, target)，训练和验证共用：在混合精度下调用一步，再检查它的返回值。"""

    def __init__(self, dev: torch.device, amp_dtype) -> None:
        self.device, self.amp_dtype = dev, amp_dtype

    def autocast(self):
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def __call__(self, step_module: nn.Module, batch):
        with self.autocast():
            out = step_module(batch)
        return _unpack_step_output(out, batch)


# ---------------------------------------------------------------- 验证


@torch.no_grad()
def _evaluate(step_module, loader, runner: _StepRunner, ctx, metrics=None, predict=None, ignore_index=-100) -> dict:
    """在整个数据集上算 {"loss": 按样本数加权的平均损失, 指标名: 值}（多进程时汇总所有进程）。"""
    step_module.eval()
    loss_sum, items = torch.zeros((), device=runner.device), 0
    trues, preds = [], []
    for batch in loader:
        batch = move_to_device(batch, runner.device)
        loss, outputs, target = runner(step_module, batch)
        n = _count_items(target)
        loss_sum += loss.float() * n
        items += n
        if metrics:
            if outputs is None or target is None:
                raise ValueError("要计算验证指标，step 需要返回 (loss, outputs, target)。")
            y_pred = predict(outputs) if predict else _default_predict(outputs, target)
            y_true, y_pred = target.reshape(-1), y_pred.reshape(-1)
            if y_true.numel() != y_pred.numel():
                raise ValueError(
                    f"predict 的结果有 {y_pred.numel()} 个元素，目标有 {y_true.numel()} 个。"
                    "请传入 predict=函数，把模型输出变成与目标形状相同的预测（例如 lambda o: o.argmax(-1)）。"
                )
            keep = y_true != ignore_index  # 填充位置（默认 -100，与 CrossEntropyLoss 一致）不计入指标
            trues.append(y_true[keep])
            preds.append(y_pred[keep])
    total_loss, total_items = ctx.sum([loss_sum, items])
    result = {"loss": total_loss / max(total_items, 1)}
    if metrics:
        # 先把所有预测收集到 CPU，再对整个验证集调用一次指标函数：F1 这类指标不能按批平均
        local = (torch.cat(trues).cpu(), torch.cat(preds).cpu()) if trues else None  # 这个进程可能一批也没分到
        gathered = [pair for pair in ctx.gather(local) if pair is not None]
        y_true = torch.cat([t for t, _ in gathered])
        y_pred = torch.cat([p for _, p in gathered])
        for name, fn in metrics.items():
            result[name] = float(fn(y_true, y_pred))
    return result


def evaluate(model, loader, loss_fn=None, *, step=None, metrics=None, predict=None, ignore_index=-100,
             device=None, amp="off") -> dict:
    """在整个数据集上评估模型，返回 ``{"loss": 平均损失, 指标名: 值, ...}``。

    损失按样本数加权平均（最后一个小批次不会被多算）。指标函数 ``fn(y_true, y_pred) -> float``
    在收集完整个数据集的预测后只调用一次，参数是一维 CPU 张量（scikit-learn 的函数可以直接用）；
    目标等于 ignore_index 的位置（填充）被去掉。predict 把模型输出变成预测，默认 argmax(-1)。

    例：``evaluate(model, test_loader, nn.CrossEntropyLoss(), metrics={"acc": accuracy_score})``
    """
    dev = next(model.parameters()).device if device is None else torch.device(device)
    runner = _StepRunner(dev, resolve_amp(amp, dev))
    was_training = model.training
    try:
        step_module = _StepModule(model, step if step is not None else _LossStep(loss_fn))
        return _evaluate(step_module, loader, runner, distributed.DistContext(device=dev), metrics, predict,
                         ignore_index)
    finally:
        model.train(was_training)  # 评估完恢复原来的 train/eval 状态


# ---------------------------------------------------------------- 早停与实时曲线


class _EarlyStopping:
    """记住 monitor 的最好值；连续 patience 轮没有改进就该停了。"""

    def __init__(self, monitor: str, mode: str, patience: int | None, min_delta: float) -> None:
        self.monitor, self.mode, self.patience, self.min_delta = monitor, mode, patience, min_delta
        self.best, self.best_epoch, self.bad_epochs = None, 0, 0

    def update(self, record: dict) -> bool:
        """记录一轮的结果，返回这一轮是否是新的最好。"""
        value = record[self.monitor]
        if self.best is None:
            better = not math.isnan(value)
        elif self.mode == "min":
            better = value < self.best - self.min_delta
        else:
            better = value > self.best + self.min_delta
        if better:
            self.best, self.best_epoch, self.bad_epochs = value, record["epoch"], 0
            return True
        self.bad_epochs += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.patience is not None and self.bad_epochs >= self.patience


class _LivePlot:
    """JupyterLab 里每轮在同一个输出位置重画损失曲线。终端和 CI 里不创建（见 fit 里的判断）。"""

    def __init__(self) -> None:
        import matplotlib.pyplot as plt
        from IPython.display import display

        self.display = display
        self.fig = plt.figure(figsize=(10, 3.6))
        plt.close(self.fig)  # 不再是“当前图”：单元格结束时 inline 后端不会再多画一张
        self.handle = None

    def update(self, history: History) -> None:
        history.plot(fig=self.fig)
        if self.handle is None:
            self.handle = self.display(self.fig, display_id=True)
        else:
            self.handle.update(self.fig)


# ---------------------------------------------------------------- fit 的选项


STRATEGIES = ("ddp", "fsdp")


@dataclass(kw_only=True)
class FitOptions:
    """fit 的全部选项，每个只在这里写一次。``fit(model, train_dl, epochs=5, optimizer=opt)`` 用关键字
    参数建它；也可以先建好一份，几次训练共用：``fit(model, train_dl, val_dl, options=opts, epochs=3)``
    （关键字参数覆盖 options 里的同名项）。"""

    # ---- 必填
    epochs: int
    """训练的总轮数（续训时也是总轮数，不是“再训几轮”）。"""
    optimizer: torch.optim.Optimizer
    """优化器，例如 ``torch.optim.AdamW(model.parameters(), lr=1e-3)``；手写的 Optimizer 子类也行。"""

    # ---- 数据与损失
    loss_fn: Callable | None = None
    """``loss_fn(outputs, target) -> 标量``；默认 flat_cross_entropy（分类和语言模型都适用）。"""
    step: Callable | None = None
    """替代默认的一步：``step(model, batch)`` 返回 loss 或 (loss, outputs, target)。batch 已在 device 上，
    model 就是你传给 fit 的模型，多进程时也是（梯度同步由 fit 负责）；compile=True 时是它的编译版，
    属性和方法照常可用。损失不是 (outputs, target)
    的函数时用它（CRF 负对数似然、skip-gram）。吞吐与加权平均按“样本数”= 目标的第一维计算。"""
    device: str | torch.device | None = None
    """训练用的设备；默认自动选（CUDA > MPS > CPU），torchrun 下每个进程用自己的 GPU。"""

    # ---- 验证指标
    metrics: dict | None = None
    """``{"accuracy": fn}``：fn(y_true, y_pred) 在整个验证集上只调用一次（一维 CPU 张量），记为 "val_accuracy"。"""
    predict: Callable | None = None
    """``predict(outputs)`` 把模型输出变成与目标同形的预测；默认 logits 比目标多一维时取 argmax(-1)。"""
    ignore_index: int = -100
    """目标等于它的位置（填充）不计入验证指标，与 CrossEntropyLoss 的默认值相同。"""

    # ---- 优化
    amp: str | bool | None = "off"
    """混合精度："off" | "bf16" | "fp16" | "auto"（CPU 有 AVX-512 / AMX 时用 bf16，否则不开；CUDA 有原生 bf16 就用 bf16，否则 fp16 + GradScaler）。"""
    clip_grad_norm: float | None = None
    """梯度总范数上限；None 表示不裁剪（fp16 下先 unscale 再裁剪）。"""
    accumulate: int = 1
    """累积 k 个小批次再更新一次：每个小批次的损失除以组内批数，等价于一个 k 倍大的批次；
    每轮最后凑不满 k 个的一组也会更新。"""
    scheduler: object | None = None
    """每个优化步调用一次 step()（见 warmup_cosine）；ReduceLROnPlateau 则每轮按 monitor 调用一次。"""
    compile: bool | dict = False
    """True 时用 torch.compile 编译模型（CPU 上需要 C++ 编译器，GPU 上需要 Triton；编译不了时在训练开始前报错，
    原因见 :func:`~aigc_lib.core.runtime.compile_problem`）；也可传 dict 作为 torch.compile 的参数。"""
    strategy: str = "ddp"
    """torchrun 多进程时怎样放模型："ddp" 每个进程一份完整的参数、梯度和优化器状态；"fsdp" 把三者都切成
    N 份，每个进程只存 1/N（见 fsdp.py）。两者的损失轨迹相同、检查点文件相同。单进程时不起作用。
    fsdp 训练完模型仍是分片的（参数是 DTensor）；要完整的权重，每个进程都调用
    ``fsdp.full_state(model.state_dict())``，或直接读 checkpoint_dir 里的检查点。"""

    # ---- 早停与检查点
    monitor: str = "val_loss"
    """早停和 best.pt 看的量："val_loss"、"train_loss" 或 "val_<指标名>"（没有验证集时 "val_loss" 改用 "train_loss"）。"""
    mode: str | None = None
    """"min" 或 "max"；省略时名字含 loss 的越小越好，其余越大越好。"""
    patience: int | None = None
    """连续这么多轮没有改进（超过 min_delta）就停止；None 表示不早停。"""
    min_delta: float = 0.0
    """比最好值至少好这么多才算改进。"""
    restore_best: bool = False
    """训练结束（含早停、中断）时把模型恢复到 monitor 最好的那一轮。"""
    checkpoint_dir: str | os.PathLike | None = None
    """每轮写 last.pt，monitor 变好时写 best.pt（只在 rank 0 上写，键名就是原模型的 state_dict 键名）。"""
    resume: str | os.PathLike | bool | None = None
    """检查点路径（或目录，读其中 last.pt）；True 表示“checkpoint_dir/last.pt 存在就从它继续”。恢复模型、
    优化器、调度器、GradScaler、训练记录和随机数状态，从下一轮（或中断的那一批）继续；CPU 上续训与
    一口气训练完得到相同的权重。"""
    config: dict | None = None
    """和检查点一起存下的模型超参数（load_run 之类的函数靠它重建模型）。"""
    resume_hint: str | None = None
    """被 Ctrl-C 打断时告诉用户怎样继续的写法；默认是 Python 的 ``fit(..., resume='last.pt 的路径')``，
    ``aigc train`` 传它自己的命令（``aigc train --resume 目录``）。"""

    # ---- 显示
    progress: bool = True
    """每轮一个进度条（损失、学习率、样本/秒）和一行小结；False 时完全安静。"""
    live_plot: bool = False
    """在 JupyterLab 里每轮更新一张损失曲线；终端和 CI 里忽略。"""
    log_every: int | None = None
    """每隔多少个批次读一次损失（检查 NaN、刷新进度条）。GPU 上读取会让 CPU 等 GPU，所以默认 GPU 上
    25 批一次、CPU 上每批一次（CPU 上读取没有代价，且能在 NaN 污染权重前停下）。"""

    def __post_init__(self) -> None:
        if not isinstance(self.epochs, int) or self.epochs < 1:
            raise ValueError(f"epochs 应是正整数，收到 {self.epochs!r}。")
        if not isinstance(self.accumulate, int) or self.accumulate < 1:
            raise ValueError(f"accumulate 应是正整数（每几个小批次更新一次参数），收到 {self.accumulate!r}。")
        if self.log_every is not None and (not isinstance(self.log_every, int) or self.log_every < 1):
            raise ValueError(f"log_every 应是正整数（每几批读一次损失）或 None，收到 {self.log_every!r}。")
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy 只能是 {' 或 '.join(map(repr, STRATEGIES))}（多进程时怎样放模型），"
                             f"收到 {self.strategy!r}。")
        if self.metrics and "loss" in self.metrics:
            raise ValueError("指标名不能叫 'loss'（会与 val_loss 重名），请换一个名字。")

    @classmethod
    def build(cls, options: FitOptions | None = None, **kwargs) -> FitOptions:
        """fit 的关键字参数 -> FitOptions；给了 options 时以它为底，关键字参数覆盖同名项。"""
        names = [f.name for f in fields(cls)]
        unknown = [key for key in kwargs if key not in names]
        if unknown:
            hints = [f"{key}（是不是 {close[0]}？）" if (close := difflib.get_close_matches(key, names, n=1)) else key
                     for key in unknown]
            raise TypeError(f"fit 不认识这些参数：{'、'.join(hints)}。可用的参数：{', '.join(names)}。")
        if options is not None:
            if not isinstance(options, cls):
                raise TypeError(f"options 应是 FitOptions，收到 {type(options).__name__}。其余选项请用关键字参数传入。")
            return replace(options, **kwargs)
        missing = [name for name in ("epochs", "optimizer") if name not in kwargs]
        if missing:
            raise TypeError(f"fit 缺少必填的参数 {'、'.join(missing)}。"
                            "例：fit(model, train_loader, epochs=5, optimizer=torch.optim.AdamW(model.parameters()))")
        return cls(**kwargs)


# ---------------------------------------------------------------- fit


def fit(model: nn.Module, train_loader, val_loader=None, options: FitOptions | None = None, **kwargs) -> History:
    """训练 ``model`` ``epochs`` 轮，返回 History。模型在原处被训练（参数搬到 device 上）。

    选项都是关键字参数，每一个的含义见 :class:`FitOptions`（必填的只有 epochs 和 optimizer）；
    也可以传一份建好的 ``options=FitOptions(...)``，再用关键字参数覆盖其中几项。

    数据：train_loader / val_loader 是 DataLoader（或任何可迭代的批次序列），批次的最后一个元素是目标。
    验证：val_loss 按样本数加权平均；metrics 在整个验证集的预测上各算一次，记为 "val_<名字>"。
    出错时：损失出现 NaN/inf 抛出 NonFiniteLossError（指出第几轮第几批）；Ctrl-C 时保存 last.pt
    （有 checkpoint_dir 时）并返回目前的 History。在 torchrun 下自动做分布式训练，见 distributed.py。

    例::

        sched = warmup_cosine(opt, 100, steps_per_epoch(train_dl) * 10)
        history = fit(model, train_dl, val_dl, epochs=10, optimizer=opt, scheduler=sched,
                      metrics={"accuracy": accuracy_score}, monitor="val_accuracy", patience=3,
                      restore_best=True, checkpoint_dir="runs/lstm")
    """
    return _FitLoop(model, train_loader, val_loader, FitOptions.build(options, **kwargs)).run()


class _Accumulator:
    """梯度累积的分组：第 i 批（从 0 数）属于第 i // k 组，组里最后一批做完就更新参数。

    知道每轮有几批时，最后一组可能不满 k 批：它的损失按实际批数平均（``size``）。
    """

    def __init__(self, k: int, n_batches: int | None) -> None:
        self.k, self.n_batches = k, n_batches

    def size(self, i: int) -> int:
        """第 i 批所在的组有几批。"""
        group_start = i - i % self.k
        return min(self.k, self.n_batches - group_start) if self.n_batches else self.k

    def closes_group(self, i: int) -> bool:
        """第 i 批是不是本组最后一批（做完就更新参数）。"""
        return i % self.k + 1 == self.size(i)


@dataclass
class _EpochProgress:
    """一轮训练进行到哪里。Ctrl-C 时存进检查点的 "partial"，续训时从这里接着跑同一轮。"""

    batch: int = 0  # 本轮已训练、且参数已更新的批数
    seconds: float = 0.0  # 这些批用掉的秒数（续训后本轮的样本/秒仍按整轮算）
    loss_sum: float = 0.0  # 这些批的 损失×样本数 之和
    items: int = 0  # 这些批的样本数
    epoch_rng: dict | None = None  # 本轮开始时的随机数状态：续训时靠它重放同样的数据顺序


class _LossLog:
    """一轮里每批的损失。先以张量留在设备上，每 log_every 批才读出一次：在 GPU 上每次 .item()
    都会让 CPU 停下来等 GPU 算完。读出时检查 NaN，并累加 损失×样本数 与样本数。"""

    def __init__(self, start: _EpochProgress, log_every: int) -> None:
        self.start, self.log_every = start, log_every
        self.losses: list[tuple[torch.Tensor, int]] = []  # 本次运行里每批的 (loss, 样本数)
        self.loss_sum, self.items, self.checked = start.loss_sum, start.items, 0

    def add(self, loss: torch.Tensor, items: int) -> bool:
        """记下一批，返回是否该读出了（在 backward 之前读，NaN 还没进入权重）。"""
        self.losses.append((loss.detach(), items))
        return len(self.losses) - self.checked >= self.log_every

    def read(self, describe_batch) -> None:
        """读出还没读的损失（一次同步）；有 NaN/inf 就抛出 NonFiniteLossError。

        describe_batch(j) 给出本次运行第 j 批（从 0 数）的位置说明，用在报错信息里。
        """
        chunk = self.losses[self.checked:]
        for j, value in enumerate(_values(chunk)):
            if not math.isfinite(value):
                where = describe_batch(self.checked + j)
                raise NonFiniteLossError(
                    f"{where}的损失是 {value}，训练已停止。可以试试：\n"
                    "  1) 把学习率调小（例如除以 10），或用 warmup_cosine 先预热；\n"
                    "  2) 传 clip_grad_norm=1.0 裁剪梯度；\n"
                    "  3) 传 amp='off' 关掉混合精度（fp16 的数值范围很小）；\n"
                    "  4) 检查数据和损失函数的输入里有没有 NaN、log(0) 或除以 0。",
                    where=where, value=value,
                )
        self.loss_sum += _weighted_sum(chunk)
        self.items += sum(n for _, n in chunk)
        self.checked = len(self.losses)

    @property
    def mean(self) -> float:
        return self.loss_sum / max(self.items, 1)

    def progress_at(self, done: _EpochProgress) -> _EpochProgress:
        """把 done（参数最近一次更新时的批号与秒数）补上那时为止的损失总和，Ctrl-C 的检查点存的就是它。"""
        used = self.losses[: done.batch - self.start.batch]  # 已更新参数的批次
        return replace(done, loss_sum=self.start.loss_sum + _weighted_sum(used),
                       items=self.start.items + sum(n for _, n in used))


def _values(chunk) -> list[float]:
    if not chunk:
        return []
    return [chunk[0][0].item()] if len(chunk) == 1 else torch.stack([l for l, _ in chunk]).float().tolist()


def _weighted_sum(chunk) -> float:
    return sum(v * n for v, (_, n) in zip(_values(chunk), chunk))


class _FitLoop:
    """fit 的全部状态。拆成几个方法，只是为了每一段都能一口气读完。"""

    def __init__(self, model, train_loader, val_loader, opts: FitOptions) -> None:
        self.opts = opts
        self.epochs, self.optimizer, self.scheduler = opts.epochs, opts.optimizer, opts.scheduler
        self.metrics = opts.metrics or {}
        self.show = opts.progress

        # 设备与进程：torchrun 下初始化进程组；模型参数原地搬到设备上，优化器仍指向同一批参数
        self.ctx = distributed.setup(opts.device)
        self.device = self.ctx.device
        self.model = model.to(self.device)
        amp_dtype = resolve_amp(opts.amp, self.device)
        self.runner = _StepRunner(self.device, amp_dtype)
        # fp16 的范围小，梯度容易下溢成 0，需要 GradScaler 先放大损失；bf16 范围与 fp32 相同，不需要
        use_scaler = amp_dtype == torch.float16 and self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda") if use_scaler else None
        self.log_every = opts.log_every or (1 if self.device.type == "cpu" else 25)

        # 训练进度：续训时从检查点恢复
        self.history = History()
        self.epoch, self.global_step = 0, 0  # 已完成的轮数、已做的优化步数
        self.resume_from: _EpochProgress | None = None  # Ctrl-C 时停在一轮中间的位置
        self.resume_rng = None  # 那一刻的随机数状态（跳过已训练的批次之后再恢复）
        self.generators = _loader_generators(train_loader)
        self.checkpoint_dir = Path(opts.checkpoint_dir) if opts.checkpoint_dir else None
        resume_path = self._resume_path(opts.resume)
        if resume_path is not None:
            self._restore(resume_path)

        self.monitor = self._resolve_monitor(opts.monitor, val_loader)
        self.stopper = _EarlyStopping(self.monitor, _infer_mode(self.monitor, opts.mode), opts.patience,
                                      opts.min_delta)
        for record in self.history.records:
            self.stopper.update(record)
        self.best_state = self._initial_best_state(resume_path)

        # 一步 = step(模型, batch)。torch.compile 只编译模型的前向（step 里的 Python 逻辑照常执行）；
        # 多进程时 DDP 包住“模型 + 一步”这个模块，step 拿到的仍是模型本身，梯度照样同步。
        # 保存检查点时总是用原模型 self.model，键名不带任何前缀
        model_in_step = self.model
        backend = opts.compile.get("backend", "inductor") if isinstance(opts.compile, dict) else "inductor"
        if opts.compile and backend == "inductor" and (problem := compile_problem(self.device)):
            raise RuntimeError(problem)  # 不先查的话，要到第一步才报一长串英文
        if opts.compile:
            model_in_step = torch.compile(self.model, **(opts.compile if isinstance(opts.compile, dict) else {}))
        step_module = _StepModule(model_in_step, opts.step if opts.step is not None else _LossStep(opts.loss_fn))
        self.fsdp = self.ctx.enabled and opts.strategy == "fsdp"
        self.ddp = None
        if self.fsdp:
            # 分片会把参数换成新的 DTensor 对象：先记下旧参数的名字，分片后让优化器改指新参数
            names = {id(p): name for name, p in step_module.named_parameters()}
            fsdp.shard_model(step_module, self.ctx)
            fsdp.repoint_optimizer(self.optimizer, names, step_module)
        elif self.ctx.enabled:
            self.ddp = distributed.wrap_model(step_module, self.ctx)
        self.train_step = self.ddp if self.ddp is not None else step_module
        self.eval_step = step_module  # 验证时各进程的批数可能不同，不能经过 DDP（它的前向会做集合通信）
        self.train_loader = distributed.shard_loader(train_loader, self.ctx, train=True)
        self.val_loader = distributed.shard_loader(val_loader, self.ctx, train=False)
        # 只在进度条显示为控件（JupyterLab）时画实时曲线：终端里不产生图，CI 里也不画
        show_live = opts.live_plot and opts.progress and self.ctx.is_main and progress_mode() == "widget"
        self.live = _LivePlot() if show_live else None

    # ---- 主循环

    def run(self) -> History:
        if self.epoch >= self.epochs:
            self._say(f"检查点已训练完 {self.epoch} 轮，不少于 epochs={self.epochs}，没有继续训练。")
        for epoch in range(self.epoch + 1, self.epochs + 1):
            started = time.perf_counter()
            try:
                train_loss, items_per_s = self._train_epoch(epoch)
                val = self._validate() if self.val_loader is not None else {}
                self.epoch_end_rng = rng_state(self.generators)  # 下一轮从这个随机数状态开始
                record = {"epoch": epoch, "train_loss": train_loss, **{"val_" + k: v for k, v in val.items()},
                          "lr": self.optimizer.param_groups[0]["lr"], "time": time.perf_counter() - started,
                          "items_per_s": items_per_s}
                self.history.append(record)
                self.epoch, self.resume_from = epoch, None
                self._end_of_epoch(record)
            except KeyboardInterrupt:
                self._on_interrupt(epoch)
                break
            if self.stopper.should_stop:
                self.history.stop_reason = "early_stopping"
                self._say(f"提前停止：{self.monitor} 已连续 {self.stopper.patience} 轮没有改进，"
                          f"最好的是第 {self.stopper.best_epoch} 轮（{self.stopper.best:.4f}）。")
                break
        if self.opts.restore_best and self.best_state is not None:
            if self.fsdp:
                fsdp.load_full_state(self.model, self.best_state)
            else:
                self.model.load_state_dict(self.best_state)
            self._say(f"已把模型恢复到第 {self.stopper.best_epoch} 轮（{self.monitor} 最好）的权重。")
        return self.history

    def _end_of_epoch(self, record: dict) -> None:
        """早停计数、按轮调整的学习率、记住最好的权重、写检查点、显示。"""
        improved = self.stopper.update(record)
        if isinstance(self.scheduler, ReduceLROnPlateau):
            self.scheduler.step(record[self.monitor])
        if improved and self.opts.restore_best:
            state = fsdp.full_state(self.model.state_dict()) if self.fsdp else self.model.state_dict()
            self.best_state = {k: v.detach().to("cpu", copy=True) for k, v in state.items()}
        if self.checkpoint_dir is not None:
            last = self.checkpoint_dir / "last.pt"
            self._checkpoint(last, rng=self.epoch_end_rng)
            if improved and self.ctx.is_main:
                shutil.copyfile(last, self.checkpoint_dir / "best.pt")
        self._report(record)

    def _train_epoch(self, epoch: int) -> tuple[float, float]:
        """训练一轮，返回 (按样本加权的平均训练损失, 样本/秒)；多进程时是所有进程的汇总。"""
        self.train_step.train()
        self.optimizer.zero_grad(set_to_none=True)
        _set_epoch(self.train_loader, epoch)
        self.done, self.done_rng = None, None  # 在“跳过已训练批次”的过程中被打断时，检查点保持原样
        batches, start = self._epoch_batches()
        n_batches = len(self.train_loader) if hasattr(self.train_loader, "__len__") else None
        groups = _Accumulator(self.opts.accumulate, n_batches)
        self.log = log = _LossLog(start, self.log_every)
        self.done = replace(start)  # 最近一次更新参数时的进度：Ctrl-C 时存下它，续训从这里开始
        started = time.perf_counter() - start.seconds

        def updated(batches_done: int) -> None:
            self.done = _EpochProgress(batches_done, time.perf_counter() - started, epoch_rng=start.epoch_rng)

        def where(j: int) -> str:  # 本次运行第 j 批（从 0 数）在报错信息里怎么说
            return f"第 {epoch} 轮第 {start.batch + j + 1} 批（第 {self.global_step + 1} 个优化步附近）"

        bar = self._progress_bar(batches, epoch, n_batches, start.batch)
        i, shown = start.batch - 1, 0.0
        try:
            for i, batch in enumerate(bar if bar is not None else batches, start=start.batch):
                batch = move_to_device(batch, self.device)
                updates = groups.closes_group(i)
                with self._gradient_sync(updates):
                    loss, _, target = self.runner(self.train_step, batch)
                    if log.add(loss, _count_items(target)):
                        log.read(where)
                        if bar is not None and time.perf_counter() - shown > 0.5:  # 半秒刷新一次就够
                            shown = time.perf_counter()
                            self._show_postfix(bar, log, shown - started)
                    if groups.size(i) > 1:
                        loss = loss / groups.size(i)  # k 个小批次的平均梯度 = 一个 k 倍大批次的梯度
                    (self.scaler.scale(loss) if self.scaler is not None else loss).backward()
                if updates:
                    self._optimizer_step()
                    updated(i + 1)
            if i + 1 > self.done.batch:  # 没有 len 的数据源：最后凑不满 k 批的一组也更新一次
                self._optimizer_step()
                updated(i + 1)
            log.read(where)
        finally:
            if bar is not None:
                bar.close()
        # 验证集的 DataLoader 也会消耗随机数；验证中被打断时，要恢复的是此刻的状态
        self.done_rng = rng_state(self.generators)
        seconds = time.perf_counter() - started
        total_loss, total_items = self.ctx.sum([log.loss_sum, log.items])
        return total_loss / max(total_items, 1), total_items / max(seconds, 1e-9)

    def _gradient_sync(self, updates: bool):
        """累积中的批次不必在进程间同步梯度，更新前的最后一批同步一次就够了。"""
        if self.fsdp:
            return fsdp.no_sync(self.train_step, updates)
        return self.ddp.no_sync() if self.ddp is not None and not updates else nullcontext()

    def _progress_bar(self, batches, epoch: int, total: int | None, initial: int):
        if not (self.show and self.ctx.is_main):
            return None
        return progress(batches, total=total, initial=initial, leave=False, desc=f"第 {epoch}/{self.epochs} 轮",
                        unit="批")

    def _show_postfix(self, bar, log: _LossLog, seconds: float) -> None:
        bar.set_postfix(loss=f"{log.mean:.4f}", lr=f"{self.optimizer.param_groups[0]['lr']:.2e}", refresh=False,
                        **{"样本/秒": f"{log.items / seconds:.0f}"})

    def _epoch_batches(self) -> tuple:
        """本轮的批次迭代器和起点。从 Ctrl-C 的检查点续训时，重放同样的顺序并跳过已训练的批次。"""
        if self.resume_from is None:
            # 先记下本轮开始时的随机数状态（中断时要靠它重放本轮的数据顺序），再建迭代器：建迭代器就会抽随机数
            start = _EpochProgress(epoch_rng=rng_state(self.generators))
            return iter(self.train_loader), start
        start = self.resume_from
        set_rng_state(start.epoch_rng, self.generators)
        batches = iter(self.train_loader)
        for _ in range(start.batch):
            next(batches)
        set_rng_state(self.resume_rng, self.generators)  # 回到中断那一刻的随机数状态
        return batches, start

    def _optimizer_step(self) -> None:
        params = self.model.parameters()
        if self.scaler is not None:
            if self.opts.clip_grad_norm is not None:
                self.scaler.unscale_(self.optimizer)  # 先还原真实梯度，裁剪阈值才有意义
                nn.utils.clip_grad_norm_(params, self.opts.clip_grad_norm)
            self.scaler.step(self.optimizer)  # 梯度里有 inf/NaN 时这一步会被跳过，并调小放大倍数
            self.scaler.update()
        else:
            if self.opts.clip_grad_norm is not None:
                nn.utils.clip_grad_norm_(params, self.opts.clip_grad_norm)
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.scheduler is not None and not isinstance(self.scheduler, ReduceLROnPlateau):
            self.scheduler.step()
        self.global_step += 1

    def _validate(self) -> dict:
        with fsdp.gathered(self.eval_step) if self.fsdp else nullcontext():
            return _evaluate(self.eval_step, self.val_loader, self.runner, self.ctx, self.metrics, self.opts.predict,
                             self.opts.ignore_index)

    # ---- 监控、检查点、续训

    def _resolve_monitor(self, monitor: str, val_loader) -> str:
        available = ["train_loss"] + (["val_loss"] + [f"val_{m}" for m in self.metrics] if val_loader is not None else [])
        if monitor == "val_loss" and val_loader is None:
            return "train_loss"
        if monitor not in available and f"val_{monitor}" in available:
            return f"val_{monitor}"  # 允许只写指标名："accuracy" -> "val_accuracy"
        if monitor not in available:
            raise ValueError(f"monitor={monitor!r} 不在每轮的记录里。可选：{', '.join(available)}。")
        return monitor

    def _resume_path(self, resume):
        if resume is None or resume is False:
            return None
        if resume is True:  # “有就续训”：checkpoint_dir/last.pt 存在时从它继续，否则从头开始
            if self.checkpoint_dir is None:
                raise ValueError("resume=True 表示从 checkpoint_dir/last.pt 继续，请同时传入 checkpoint_dir。")
            path = self.checkpoint_dir / "last.pt"
            return path if path.is_file() else None
        path = Path(resume)
        return path / "last.pt" if path.is_dir() else path

    def _restore(self, path: Path) -> None:
        ckpt = load_checkpoint(path, self.model, self.optimizer)
        # 调度器和 GradScaler 只在检查点里有时才恢复（例如上次没开 fp16，这次开了）
        for name, obj in (("scheduler", self.scheduler), ("scaler", self.scaler)):
            if obj is not None and name in ckpt:
                obj.load_state_dict(ckpt[name])
        self.history = History.from_dict(ckpt.get("history"))
        self.history.stop_reason = None
        self.epoch, self.global_step = ckpt.get("epoch") or 0, ckpt.get("global_step", 0)
        if ckpt.get("partial") is not None:
            self.resume_from = _EpochProgress(**ckpt["partial"])
            self.resume_rng = ckpt["rng"]  # 跳过已训练的批次之后再恢复
        elif "rng" in ckpt:
            set_rng_state(ckpt["rng"], self.generators)
        start = self.resume_from
        where = f"第 {self.epoch + 1} 轮第 {start.batch + 1} 批" if start else f"第 {self.epoch + 1} 轮"
        self._say(f"从检查点 {path} 继续训练：已完成 {self.epoch} 轮，从{where}开始。")

    def _initial_best_state(self, resume_path):
        """续训且 restore_best 时，最好的权重在 best.pt 里（内存里的那份随上次运行一起没了）。"""
        if not (self.opts.restore_best and resume_path is not None and self.stopper.best_epoch):
            return None
        best_path = resume_path.parent / "best.pt"
        if best_path.is_file():
            ckpt = load_checkpoint(best_path)
            if ckpt.get("epoch") == self.stopper.best_epoch:
                return ckpt["model"]
        self._say(f"没有找到第 {self.stopper.best_epoch} 轮的 best.pt，restore_best 只会在之后的轮次里生效。")
        return None

    def _checkpoint(self, path: Path, **extra) -> None:
        """rank 0 写检查点。FSDP 时每个进程都要调用：先把分片收齐成完整的 state_dict（集合通信），
        所以文件与 DDP、单进程存的完全一样，一个进程就能加载。"""
        model, optimizer = self.model, self.optimizer
        if self.fsdp:
            model, optimizer = fsdp.full_state(model.state_dict()), fsdp.full_state(optimizer.state_dict())
        if self.ctx.is_main:
            save_checkpoint(path, model, optimizer, self.scheduler, self.scaler, epoch=self.epoch,
                            history=self.history, config=self.opts.config, global_step=self.global_step, **extra)

    def _on_interrupt(self, epoch: int) -> None:
        """Ctrl-C：保存最近一次更新参数时的进度，下次 resume 从下一批继续（数据顺序不变）。"""
        self.history.stop_reason = "interrupted"
        if not self.ctx.is_main:
            return
        path = self.checkpoint_dir / "last.pt" if self.checkpoint_dir is not None else None
        if path is None:
            where = "（没有传 checkpoint_dir，未保存）"
        elif self.fsdp:  # 收齐分片要所有进程配合，被中断的进程不一定还在：不冒险，保留上一轮末的 last.pt
            where = f"；FSDP 训练中断时不保存，{path} 仍是上一轮结束时的检查点"
        elif self.epoch == epoch:  # 这一轮已经结束，是在保存或显示时被打断的：存普通的轮末检查点
            self._checkpoint(path, rng=self.epoch_end_rng)
            where = f"，已保存到 {path}；用 {self.opts.resume_hint or f'fit(..., resume={str(path)!r})'} 从这里继续"
        elif self.done is None:
            where = "（恢复进度时被打断，检查点保持原样）"
        else:
            partial = asdict(self.log.progress_at(self.done))
            rng = self.done_rng if self.done_rng is not None else rng_state(self.generators)
            self._checkpoint(path, rng=rng, partial=partial)
            where = f"，已保存到 {path}；用 {self.opts.resume_hint or f'fit(..., resume={str(path)!r})'} 从这里继续"
        self._say(f"训练在第 {epoch} 轮被中断（Ctrl-C），返回目前的训练记录{where}。")

    # ---- 显示

    def _say(self, message: str) -> None:
        if self.show and self.ctx.is_main:
            print(message)

    def _report(self, record: dict) -> None:
        if self.live is not None:
            self.live.update(self.history)
        parts = [f"第 {record['epoch']}/{self.epochs} 轮", f"训练损失 {record['train_loss']:.4f}"]
        parts += [f"{k} {v:.4f}" for k, v in record.items() if k.startswith("val_")]
        parts += [f"lr {record['lr']:.2e}", f"{record['items_per_s']:.0f} 样本/秒", f"{record['time']:.1f} 秒"]
        self._say("  ".join(parts))


def _set_epoch(loader, epoch: int) -> None:
    """DistributedSampler 之类的采样器靠 set_epoch 每轮换一种打乱方式。"""
    for sampler in (getattr(loader, "sampler", None), getattr(loader, "batch_sampler", None)):
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)


def _loader_generators(loader) -> list:
    """DataLoader 及其采样器自带的 torch.Generator（续训时要一起保存和恢复它们的状态）。"""
    found = []
    for owner in (loader, getattr(loader, "sampler", None), getattr(loader, "batch_sampler", None),
                  getattr(getattr(loader, "batch_sampler", None), "sampler", None)):
        generator = getattr(owner, "generator", None)
        if isinstance(generator, torch.Generator) and all(generator is not g for g in found):
            found.append(generator)
    return found
