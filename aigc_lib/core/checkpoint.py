"""检查点：把训练状态存成一个文件，之后原样读回来，继续训练或直接使用。

一个检查点就是一个普通的 dict，用 ``torch.save`` 写、用 ``torch.load(..., weights_only=True)``
读。weights_only=True 只允许张量和 Python 基本类型（数、字符串、列表、元组、字典），读一个来路
不明的文件也不会执行其中的代码。所以这里只存 state_dict 和普通数据，不存对象本身::

    save_checkpoint("runs/lstm.pt", model, optimizer, epoch=3, config={"hidden": 128})
    ckpt = load_checkpoint("runs/lstm.pt", model, optimizer)   # 模型对不上时列出哪些键、形状不同
    ckpt["epoch"], ckpt["config"]

检查点里的键：format、model、optimizer、scheduler、scaler（有才存）、epoch、history、config
（重建模型所需的超参数），以及 fit 用来续训的 global_step、rng、partial。

还有一个 checksum：其余所有内容（每个张量的字节、每个数和字符串）的 SHA-256。torch.load 读一个
被截断的文件会报错，但文件里某一位翻转了（磁盘、拷贝出错）多半照样读得出来，只是权重悄悄变了；
load_checkpoint 重算校验和，对不上就报“检查点文件损坏或不完整”。没有 checksum 的旧文件照常读取。
"""

from __future__ import annotations

import hashlib
import os
import pickle
import random
import re
import struct
import sys
from pathlib import Path

import torch
from torch import nn

FORMAT = "aigc_lib.core.checkpoint/1"
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")  # DDP / DataParallel 和 torch.compile 加的前缀


class CheckpointMismatchError(RuntimeError):
    """检查点里的参数与模型对不上（缺键、多键或形状不同）。"""


class CheckpointError(RuntimeError):
    """文件不能当检查点用：损坏、不完整（被截断、某一位翻转）、或根本不是检查点（例如一个 JSON 文件）。"""


def _corrupt(path: Path, why: str) -> CheckpointError:
    return CheckpointError(
        f"检查点文件损坏或不完整：{path}（{why}）。请换用同一目录里的另一个检查点（best.pt 或 last.pt），"
        "或重新复制这个文件；都不行就重新训练。"
    )


def checksum(ckpt: dict) -> str:
    """检查点 dict 里除 "checksum" 以外全部内容的 SHA-256：张量按 dtype、形状和字节，其余按 repr。"""
    digest = hashlib.sha256()

    def feed(value) -> None:
        if isinstance(value, torch.Tensor):
            t = value.detach().cpu().contiguous()
            digest.update(f"T{t.dtype}{tuple(t.shape)}".encode())
            digest.update(t.reshape(-1).view(torch.uint8).numpy())  # 任何 dtype 都按原始字节算
        elif isinstance(value, dict):
            digest.update(f"D{len(value)}".encode())
            for key, item in value.items():
                digest.update(repr(key).encode())
                feed(item)
        elif isinstance(value, (list, tuple)):
            digest.update(f"{type(value).__name__}{len(value)}".encode())
            for item in value:
                feed(item)
        else:
            digest.update(repr(value).encode())

    feed({key: value for key, value in ckpt.items() if key != "checksum"})
    return digest.hexdigest()


def unwrap_model(model: nn.Module) -> nn.Module:
    """去掉 DDP（``.module``）和 torch.compile（``._orig_mod``）的外壳，返回你自己定义的模型。

    保存时用它，state_dict 的键就不会带 "module." 或 "_orig_mod." 前缀，单卡也能直接加载。
    """
    while True:
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), nn.Module):
            model = model._orig_mod
        else:
            return model


def clean_state_dict(state: dict) -> dict:
    """去掉键开头的 "module." / "_orig_mod."（可能叠了好几层），别人用 DDP 存的文件也能加载。"""
    cleaned = {}
    for key, value in state.items():
        while key.startswith(_WRAPPER_PREFIXES):
            key = key.split(".", 1)[1]
        cleaned[key] = value
    return cleaned


def save_checkpoint(
    path,
    model: nn.Module,
    optimizer=None,
    scheduler=None,
    scaler=None,
    *,
    epoch: int | None = None,
    history=None,
    config: dict | None = None,
    **extra,
) -> Path:
    """保存模型（以及可选的优化器、学习率调度器、GradScaler）的状态，返回文件路径。

    参数：
        path: 文件路径，目录不存在会自动创建。
        model: 模型；被 DDP 或 torch.compile 包过也行，存的是里面的原模型。也可以直接传它的
            state_dict（FSDP 训练时 fit 先把分片收齐成完整的 state_dict 再传进来）。
        optimizer / scheduler / scaler: 续训需要的状态（对象或它们的 state_dict），不传就不存。
        epoch: 已训练完的轮数。history: ``History`` 或普通 dict。
        config: 重建模型需要的超参数（只能是数、字符串、列表、字典），例如
            ``{"vocab_size": 5000, "hidden": 128}``。
        extra: 其他要一起存的普通数据或张量。

    例：``save_checkpoint("runs/best.pt", model, optimizer, epoch=5, config=cfg)``
    """
    ckpt = {
        "format": FORMAT,
        "model": _state_of(model),
        "epoch": epoch,
        "config": dict(config or {}),
        "torch_version": str(torch.__version__),  # TorchVersion 不是普通 str
    }
    for name, obj in (("optimizer", optimizer), ("scheduler", scheduler), ("scaler", scaler)):
        if obj is not None:
            ckpt[name] = _state_of(obj)
    if history is not None:
        ckpt["history"] = history.to_dict() if hasattr(history, "to_dict") else history
    ckpt.update(extra)
    ckpt["checksum"] = checksum(ckpt)  # 读的时候重算，发现文件里翻转的位
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # 先写临时文件再改名：保存到一半被 Ctrl-C 打断，也不会留下一个读不出来的坏文件
    tmp = path.with_name(path.name + ".tmp")
    torch.save(ckpt, tmp)
    os.replace(tmp, path)
    return path


def _state_of(obj) -> dict:
    """对象 -> 它的 state_dict（模型先去掉 DDP / compile 的外壳）；已经是 dict 的原样返回。"""
    if isinstance(obj, dict):
        return obj
    return unwrap_model(obj).state_dict() if isinstance(obj, nn.Module) else obj.state_dict()


def load_checkpoint(
    path,
    model: nn.Module | None = None,
    optimizer=None,
    scheduler=None,
    scaler=None,
    *,
    map_location="cpu",
    strict: bool = True,
) -> dict:
    """读取检查点，把状态装进传入的对象，返回整个检查点 dict（含 epoch、config、history）。

    参数：
        path: 检查点文件；传目录时读其中的 last.pt。也接受 ``torch.save(model.state_dict())``
            存的纯 state_dict 文件。
        model / optimizer / scheduler / scaler: 要恢复状态的对象，不传就只读取不装载。
        map_location: 张量先读到哪里，默认 CPU；load_state_dict 会再复制到模型所在设备。
        strict: True 时键必须完全一致；False 时忽略缺少或多余的键（形状不同仍然报错）。

    模型与检查点对不上时抛出 CheckpointMismatchError，列出缺少的键、多余的键和形状不同的键。

    例：``ckpt = load_checkpoint("runs/best.pt", model); print(ckpt["epoch"], ckpt["config"])``
    """
    path = Path(path)
    if path.is_dir():
        path = path / "last.pt"
    if not path.is_file():
        raise FileNotFoundError(f"找不到检查点文件 {path}。请检查路径，或先用 fit(checkpoint_dir=...) 训练并保存。")
    ckpt = _read(path, map_location)
    if not (isinstance(ckpt, dict) and "model" in ckpt):
        ckpt = {"model": ckpt}  # torch.save(model.state_dict(), path) 存的纯 state_dict
    if model is not None:
        load_model_state(model, ckpt["model"], strict=strict, source=str(path), config=ckpt.get("config"))
    for name, obj in (("optimizer", optimizer), ("scheduler", scheduler), ("scaler", scaler)):
        if obj is None:
            continue
        if name not in ckpt:
            raise KeyError(f"检查点 {path} 里没有 {name} 的状态（保存时没有传入）。请不要传 {name}，或换一个完整的检查点。")
        obj.load_state_dict(ckpt[name])
    return ckpt


def _read(path: Path, map_location) -> dict:
    """torch.load(weights_only=True)，把读不出来的各种原因变成一条说清楚的 CheckpointError。"""
    with open(path, "rb") as f:
        head = f.read(64)
    if not head:
        raise _corrupt(path, "文件是空的")
    # torch.save 写的是 zip 文件（开头 PK），很老的版本写的是 pickle（开头 0x80）
    if not head.startswith((b"PK", b"\x80")):
        if head.lstrip()[:1] in (b"{", b"["):
            raise CheckpointError(f"{path} 是一个 JSON 文件，不是检查点（.pt）：请给出运行目录，或其中的 best.pt / last.pt。")
        raise CheckpointError(f"{path} 不是 PyTorch 检查点（torch.save 写出的 .pt 文件）：请给出运行目录，"
                              "或其中的 best.pt / last.pt。")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"GLOBAL (\S+)", str(err))
        if found is None or not _exists(found.group(1)):  # 不是真有一个不允许的对象，而是数据读不通（翻转的位改坏了名字）
            raise _corrupt(path, "里面的数据读不通") from err
        raise CheckpointError(
            f"无法用 weights_only=True 安全读取 {path}：文件里有张量和基本类型以外的 Python 对象"
            f"（{found.group(1)}）。请用 save_checkpoint 重新保存（它只存 state_dict 和普通数据）。"
        ) from err
    # 截断、损坏的文件：PyTorch 的 zip 读取器抛 RuntimeError，pickle 读到一半抛 EOFError 或别的读取错误
    except (RuntimeError, OSError, EOFError, ValueError, KeyError, IndexError, struct.error) as err:
        raise _corrupt(path, "被截断或内容不对") from err
    if isinstance(ckpt, dict) and "checksum" in ckpt and ckpt["checksum"] != checksum(ckpt):
        raise _corrupt(path, "校验和对不上，文件内容被改动过")
    return ckpt


def _exists(name: str) -> bool:
    """"random.Random" 这样的名字是不是一个已导入的模块里真有的对象（不为此导入任何模块：那本身就会执行代码）。"""
    module, _, attr = name.rpartition(".")
    return module in sys.modules and hasattr(sys.modules[module], attr)


def load_model_state(model: nn.Module, state: dict, *, strict: bool = True, source: str = "", config=None) -> None:
    """把 state_dict 装进模型；对不上时抛出列出差异的 CheckpointMismatchError。"""
    target = unwrap_model(model)
    state = clean_state_dict(state)
    expected = target.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [
        (k, tuple(state[k].shape), tuple(expected[k].shape))
        for k in expected
        if k in state and hasattr(state[k], "shape") and state[k].shape != expected[k].shape
    ]
    if shapes or (strict and (missing or unexpected)):
        raise CheckpointMismatchError(
            _describe_mismatch(type(target).__name__, source, missing, unexpected, shapes, config)
        )
    target.load_state_dict(state, strict=strict)


def _describe_mismatch(model_name, source, missing, unexpected, shapes, config) -> str:
    """先列对不上的键和形状（最有用的信息），再附上检查点 config 里几个简短的数值；词表之类的长内容不打印。"""

    def listing(items, limit=10):
        shown = ", ".join(items[:limit])
        return shown + (f" ……（共 {len(items)} 个）" if len(items) > limit else "")

    lines = [f"检查点{' ' + source if source else ''} 与模型 {model_name} 对不上："]
    if shapes:
        diffs = [f"{k} 检查点 {list(a)} ≠ 模型 {list(b)}" for k, a, b in shapes]
        lines.append(f"  形状不同的键（{len(shapes)} 个）：{listing(diffs)}")
    if missing:
        lines.append(f"  模型需要、检查点里没有的键（{len(missing)} 个）：{listing(missing)}")
    if unexpected:
        lines.append(f"  检查点里有、模型没有的键（{len(unexpected)} 个）：{listing(unexpected)}")
    hint = "请用保存检查点时的同一套超参数重建模型再加载"
    recorded = _short_config(config)
    if recorded:
        hint += f"（检查点记录的超参数：{recorded}）"
    lines.append(hint + "；如果只想加载对得上的部分，传 strict=False（形状不同的键仍需一致）。")
    return "\n".join(lines)


def _short_config(config, limit: int = 300) -> str:
    """config 里的简短数值（有 model_config 时只看它）：数、布尔、短字符串、短的数列；长列表和字典（如词表）略去。"""
    if not isinstance(config, dict):
        return ""
    source = config.get("model_config") if isinstance(config.get("model_config"), dict) else config

    def short(value) -> bool:
        if isinstance(value, (list, tuple)):
            return all(isinstance(v, (int, float, bool)) for v in value) and len(repr(value)) <= 40
        return isinstance(value, (int, float, bool)) or value is None or (isinstance(value, str) and len(value) <= 40)

    items = [f"{k}={v!r}" for k, v in source.items() if short(v)]
    text = ", ".join(items)
    return text if len(text) <= limit else text[:limit] + " ……"


# ---- 随机数状态：续训时恢复，让“中断后继续”与“一口气训练完”得到相同的权重 ----


def rng_state(generators=()) -> dict:
    """Python、NumPy、PyTorch（CPU 和已启用的 CUDA）以及给定 torch.Generator 的随机数状态。

    只含张量和基本类型，可以存进 weights_only 检查点。NumPy 的状态数组转成 int64 张量保存。
    """
    state = {"python": random.getstate(), "torch": torch.get_rng_state()}
    try:
        import numpy as np

        name, keys, pos, has_gauss, cached = np.random.get_state()
        state["numpy"] = [name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)]
    except ImportError:
        pass
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    state["generators"] = [g.get_state() for g in generators]
    return state


def set_rng_state(state: dict, generators=()) -> None:
    """恢复 rng_state() 保存的状态。"""
    random.setstate(_as_tuple(state["python"]))
    torch.set_rng_state(state["torch"])
    if "numpy" in state:
        import numpy as np

        name, keys, pos, has_gauss, cached = state["numpy"]
        np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
    for generator, saved in zip(generators, state.get("generators", [])):
        generator.set_state(saved)


def _as_tuple(value):
    """random.setstate 要元组；存取之后若变成了列表，转回去。"""
    return tuple(_as_tuple(v) for v in value) if isinstance(value, (list, tuple)) else value
