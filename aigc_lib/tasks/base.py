"""任务的公共部分：模型表（名字 -> 怎样搭模型）、尺寸、训练流程、运行目录的读写。

一个任务声明：``models``——模型名 -> :class:`ModelSpec`（搭模型的函数、模型类、这个模型用的尺寸
dataclass，见 :mod:`~aigc_lib.tasks.sizes`），以及数据准备、评估、预测。``aigc train`` 的参数、
``load_run`` 重建模型都从这张表来，``cli.py`` 里没有任何任务或模型的名字。

一次训练写一个运行目录（``--out runs/gru``）::

    runs/gru/best.pt        验证集上最好的一轮（模型、优化器状态、训练记录、重建模型所需的配置）
    runs/gru/last.pt        最后一轮（用于续训）
    runs/gru/history.json   每轮的损失、指标、学习率、用时
    runs/gru/summary.json   任务、模型、尺寸、参数量、最好一轮的验证结果

``config`` 里只放普通的数、字符串、列表和字典，所以检查点能用 ``weights_only=True`` 安全读取。
"""

from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from ..core.checkpoint import load_checkpoint
from ..core.distributed import launched_by_torchrun
from ..core.optim import decay_param_groups
from ..core.runtime import device as pick_device
from ..core.runtime import compile_problem, seed_everything
from ..core.training import fit, resolve_amp, steps_per_epoch, warmup_cosine
from .errors import TaskError
from .rundir import claim, running_training, write_json
from .sizes import SizeField, build_sizes


# 从别的模型出发的任务（指令微调从参考 GPT 出发）要读模型库，但模型库（aigc_lib.zoo）本身建立在任务之上，
# tasks 不能反过来导入它。于是由模型库在导入时把“按名字读参考模型”的函数登记在这里（依赖倒置）。
_pretrained_loader: Callable | None = None


def register_pretrained_loader(loader: Callable) -> None:
    """模型库调用：登记 ``loader(name, device=...) -> Pretrained``，供 :func:`load_pretrained` 使用。"""
    global _pretrained_loader
    _pretrained_loader = loader


def load_pretrained(name: str, device=None):
    """按名字读模型库里的参考模型（``aigc_lib.pretrained`` 的同一个函数，经上面的登记拿到）。"""
    if _pretrained_loader is None:
        raise TaskError("模型库还没有加载：请先 import aigc_lib（它会加载 aigc_lib.zoo）。")
    return _pretrained_loader(name, device=device)


def _is_main_process() -> bool:
    """是不是 0 号进程（单进程时总是）。进程组在 fit 里才建立；建立之前按 torchrun 设的 RANK 判断。"""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank() == 0
    return os.environ.get("RANK", "0") == "0"


@dataclass(frozen=True)
class ModelSpec:
    """任务里的一个模型：``build(sizes, artifacts)`` 搭出模型；``model_class`` 是它的类
    （``load_run`` 用 ``model_class(**model.config)`` 重建）；``sizes`` 是这个模型用的尺寸 dataclass
    （只有其中的字段能在命令行里设置，默认值按档位在构造时选）。"""

    build: Callable[[dict, dict], nn.Module]
    model_class: type[nn.Module]
    sizes: type


class Task:
    """一个任务 = 数据 + 可选的模型家族 + 损失 + 评估方式。子类填写下面这些属性和方法。"""

    name: str = ""
    description: str = ""
    models: dict[str, ModelSpec] = {}  # 模型名 -> ModelSpec；命令行的 --model 只认这张表
    monitor: str = "val_loss"  # 选“最好一轮”的指标
    metric: str = ""  # evaluate 结果里最能代表这个任务的一项（模型库的表格、质量门槛都报告它）

    # ---------------------------------------------------------------- 子类实现
    def prepare(self, sizes: dict) -> tuple[object, object, dict]:
        """返回 ``(train_loader, val_loader, artifacts)``；artifacts 是预测时也要用的东西（如词表）。"""
        raise NotImplementedError

    def fit_options(self, sizes: dict) -> dict:
        """传给 ``fit`` 的任务相关参数：loss_fn / step / metrics / predict。"""
        return {}

    def evaluate(self, model: nn.Module, config: dict, split: str, device: torch.device,
                 limit: int | None = None) -> dict:
        """在一份数据上打分，返回指标字典；``limit`` 给了就只用这份数据的前 limit 个样本（顺序固定）。"""
        raise NotImplementedError

    def predict(self, model: nn.Module, config: dict, inputs: list[str], device: torch.device) -> list[dict]:
        raise NotImplementedError

    def format_prediction(self, row: dict) -> str:
        """``aigc predict`` 不加 ``--json`` 时，一条预测结果打印成一行。"""
        return "\t".join(str(v) for v in row.values())

    def with_decoding(self, config: dict, decoding: str) -> dict:
        """``aigc evaluate/predict --decoding 名字``：返回按这种解码方式改过的 config（原 config 不动）。
        只有解码方式可选的任务（拼音）覆盖它；其余任务一律报错。"""
        raise TaskError(f"任务 {self.name} 没有可选的解码方式，--decoding 只用于拼音模型（aigc train --task pinyin）。")

    # ---------------------------------------------------------------- 公共流程
    def check_model(self, model: str) -> None:
        if model not in self.models:
            raise TaskError(
                f"任务 {self.name} 没有模型 {model!r}。可选：{', '.join(self.models)}。"
            )

    def sizes(self, model: str, overrides: dict | None = None) -> dict:
        """默认尺寸（按当前档位）加上覆盖的值；覆盖一个本模型不用的参数会报错，免得以为它生效了。"""
        self.check_model(model)

        def unused(key: str, fields: list[SizeField]) -> TaskError:
            flag = "--" + key.replace("_", "-")
            return TaskError(f"任务 {self.name} 的模型 {model} 不使用参数 {flag}。"
                             f"可以调整的有：{', '.join(f.flag for f in fields)}。")

        try:
            return build_sizes(self.models[model].sizes, overrides, unknown=unused)
        except ValueError as error:
            if isinstance(error, TaskError):
                raise
            raise TaskError(str(error)) from None

    def build_model(self, model: str, sizes: dict, artifacts: dict) -> nn.Module:
        """按模型表搭模型。"""
        return self.models[model].build(sizes, artifacts)

    def train(self, model_name: str, out: str | Path, *, overrides: dict | None = None, device=None,
              amp: str = "off", seed: int = 0, compile: bool = False, progress: bool = True,
              overwrite: bool = False, resume: bool = False, strategy: str = "ddp") -> dict:
        """训练一个模型并把检查点、训练记录写进 ``out``；返回 summary（也写入 summary.json，最后写）。

        准备数据之前先检查尺寸、设备、混合精度和运行目录（:func:`~aigc_lib.tasks.rundir.claim`：
        目录能写、没有别的训练正在写它、里面没有另一次训练的结果——除非 ``overwrite=True``）。
        多进程（torchrun）时只有 0 号进程检查和占用目录，也只有它写文件。

        ``resume=True`` 时从 ``out/last.pt`` 继续（一般用 :func:`resume_run`，它从检查点读出任务、模型、
        尺寸和种子再调用这里）：同样的种子重做数据准备，权重、优化器、调度器、随机数和采样位置从检查点恢复，
        所以结果与一口气训练完相同。被 Ctrl-C 或 SIGTERM 打断时 summary 里 ``interrupted`` 为 True。
        ``strategy``：torchrun 多进程时用 "ddp" 还是 "fsdp"（见 :class:`~aigc_lib.core.training.FitOptions`）；
        两者存下的检查点完全一样，所以续训时可以换。
        """
        sizes = self.sizes(model_name, overrides)
        seed_everything(seed)
        dev = pick_device(device)
        try:
            resolve_amp(amp, dev)  # 混合精度设置不对时，在准备数据之前就报错
        except ValueError as error:
            raise TaskError(str(error)) from None
        if compile and (problem := compile_problem(dev)):
            if not resume:
                raise TaskError(f"{problem}（命令行：去掉 --compile）")
            print(f"注意：这次训练开始时用了 --compile，这台机器上编译不了，续训不编译（只是慢一些）。{problem}",
                  file=sys.stderr)
            compile = False
        with claim(out, overwrite, resume=resume) if _is_main_process() else contextlib.nullcontext(Path(out)) as out:
            return self._train(model_name, out, sizes, dev, amp, seed, compile, progress, resume, strategy)

    def _train(self, model_name, out: Path, sizes, dev, amp, seed, compile, progress, resume=False,
               strategy="ddp") -> dict:
        train_loader, val_loader, artifacts = self.prepare(sizes)
        model = self.build_model(model_name, sizes, artifacts)
        # 权重衰减只作用于矩阵（线性层、嵌入）；偏置和归一化层的权重不衰减（同 nanoGPT）
        optimizer = torch.optim.AdamW(decay_param_groups(model, sizes["weight_decay"]), lr=sizes["lr"])
        total_steps = steps_per_epoch(train_loader) * sizes["epochs"]
        scheduler = warmup_cosine(optimizer, warmup_steps=max(1, total_steps // 20), total_steps=total_steps,
                                  min_lr_ratio=0.1)
        config = {
            "task": self.name,
            "model": model_name,
            "model_config": _plain(model.config),
            "sizes": _plain(sizes),
            "artifacts": _plain(artifacts),
            "seed": seed,
            "amp": amp,  # aigc train --resume 从这里读回训练时的设置
            "compile": bool(compile),
        }
        history = fit(model, train_loader, val_loader, epochs=sizes["epochs"], optimizer=optimizer,
                      scheduler=scheduler, device=dev, amp=amp, clip_grad_norm=1.0,
                      monitor=self.monitor, restore_best=True, compile=compile, checkpoint_dir=out,
                      config=config, progress=progress, resume=out / "last.pt" if resume else None,
                      resume_hint=f"aigc train --resume {out}", strategy=strategy, **self.fit_options(sizes))
        summary = {
            "task": self.name,
            "model": model_name,
            "parameters": sum(p.numel() for p in model.parameters()),
            "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),  # LoRA 时少得多
            "epochs_run": len(history),
            "best": history.best(self.monitor) if len(history) else None,
            "train_seconds": round(sum(r.get("time", 0.0) for r in history.records), 1),
            "device": str(dev),
            "world_size": torch.distributed.get_world_size() if launched_by_torchrun()
            and torch.distributed.is_initialized() else 1,
            "sizes": _plain(sizes),
            "interrupted": history.stop_reason == "interrupted",  # Ctrl-C / SIGTERM：可以 --resume 继续
        }
        if _is_main_process():
            write_json(out / "history.json", history.to_dict())
            write_json(out / "summary.json", _plain(summary))  # 最后写：有 summary.json 的目录就是一次完整的训练
        return summary


def resume_run(run_dir: str | Path, *, device=None, progress: bool = True, strategy: str = "ddp") -> dict:
    """从运行目录里的 ``last.pt`` 继续一次训练（``aigc train --resume DIR``），返回 summary。

    任务、模型、尺寸、种子、混合精度都从 last.pt 的 config 里读（被打断的训练可能还没有 summary.json），
    然后调用 :meth:`Task.train` (``resume=True``)：同样占用运行目录的锁，同样的种子重做数据准备。
    目录里没有可以续训的 last.pt 时抛 TaskError。
    """
    from . import get_task  # 避免循环导入

    path = Path(run_dir)
    last = path / "last.pt"
    if path.is_dir() and (pid := running_training(path)):
        raise TaskError(f"另一个 aigc train（进程号 {pid}）正在往 {path} 里写：等它结束（或被打断）之后再续训。")
    if not str(run_dir).strip() or not path.is_dir() or not last.is_file():
        raise TaskError(f"{run_dir} 里没有可以续训的训练（需要 aigc train 写出的 last.pt）。"
                        "请检查目录；要重新开始，用 aigc train --task ... --model ... --out 目录。")
    config = load_checkpoint(last).get("config") or {}
    missing = [key for key in ("task", "model", "sizes") if key not in config]
    if missing:
        raise TaskError(f"{last} 不是 aigc train 写出的检查点（缺少 {', '.join(missing)}），无法续训。")
    task = get_task(config["task"])
    return task.train(config["model"], path, overrides=config["sizes"], device=device,
                      amp=config.get("amp", "off"), seed=config.get("seed", 0),
                      compile=config.get("compile", False), progress=progress, resume=True, strategy=strategy)


def load_run(run_dir: str | Path, device=None) -> tuple[Task, nn.Module, dict]:
    """读取一次训练的结果：返回 ``(task, model, config)``，模型已在 eval 模式、放到 device 上。

    ``run_dir`` 可以是运行目录（优先读 best.pt，没有就读 last.pt），也可以直接是 .pt 文件。
    """
    path = Path(run_dir)
    if path.is_dir():
        path = path / "best.pt" if (path / "best.pt").is_file() else path / "last.pt"
    if not path.is_file() and path.parent.is_dir() and (pid := running_training(path.parent)):
        raise TaskError(f"{run_dir} 里的训练（进程号 {pid}）还在进行，还没有保存第一个检查点：等第一轮训练完再试。")
    if not path.is_file():
        raise TaskError(
            f"找不到训练结果 {run_dir}（需要其中的 best.pt 或 last.pt）。"
            "请先运行 aigc train --task ... --model ... --out 这个目录。"
        )
    ckpt = load_checkpoint(path)
    config = ckpt.get("config") or {}
    if "task" not in config or "model_config" not in config:
        raise TaskError(f"{path} 不是 aigc train 写出的检查点（缺少 task / model_config），无法重建模型。")
    task, model = build_from_config(config, path)
    load_checkpoint(path, model)
    dev = pick_device(device)
    return task, model.to(dev).eval(), config


def build_from_config(config: dict, source) -> tuple[Task, nn.Module]:
    """按 ``aigc train`` 存下的 config（task、model、model_config）搭出还没装权重的模型，返回 ``(task, model)``。
    ``source`` 是 config 来自的文件，只用在出错说明里。运行目录（:func:`load_run`）和模型库共用它。"""
    from . import get_task  # 避免循环导入

    task = get_task(config["task"])
    if config["model"] not in task.models:
        raise TaskError(f"{source} 里的模型 {config['model']!r} 不在任务 {task.name} 的模型表里，无法重建。")
    return task, task.models[config["model"]].model_class(**config["model_config"])


def _plain(value):
    """把配置变成只含 int/float/str/bool/None/list/dict 的结构（weights_only 与 JSON 都能存）。"""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)
