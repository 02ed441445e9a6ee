"""模型库：课程自带的、训练好的参考模型。装好课程就能用，不用自己训练，也不联网。

    from aigc_lib import pretrained
    gpt = pretrained("lm-gpt")                   # 模型（eval 模式）+ 词表 + 来历
    gpt.generate("今天", max_new_tokens=40, top_p=0.9, seed=1)
    gpt.evaluate("test")["perplexity"]
    pretrained("segment").predict(["江泽民在北京会见克林顿"])

命令行里写 ``pretrained:名字`` 代替运行目录::

    aigc pretrained list                                  # 模型库里有什么、各自的指标
    aigc evaluate pretrained:lm-gpt --split test --json
    aigc generate pretrained:lm-gpt "今天"
    aigc predict pretrained:pinyin "jin tian tian qi hen hao"

每个参考模型是 ``aigc_lib/zoo/models/`` 里的两个文件：

- ``名字.safetensors``：权重。safetensors 文件里只有张量和一段文字说明，读取时不会执行任何代码
  （比 pickle 安全）；为了让课程包小一些，浮点权重存成 float16，读进来再转回 float32。
  文件头的说明（metadata）里有重建模型需要的 config（任务、模型、超参数、词表），JSON 格式。
- ``名字.json``：来历。训练命令、git 提交、种子、用时、硬件；**导出后的**权重在验证集、测试集上的指标，
  以及测试集前 ``SLICE`` 个样本（:func:`slice_limit`）上的指标（测试用它复核）；训练曲线；权重文件的 sha256 和字节数
  （读取时核对：文件被截断或改坏了，会直接说"检查点文件损坏或不完整"）。

这些模型由 ``python benchmarks/train_reference.py`` 用 ``aigc train`` 从头训练、再用 :func:`export_run` 导出。
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from ..core.checkpoint import load_model_state, unwrap_model
from ..core.history import History
from ..core.runtime import device as pick_device
from ..data.text import Vocab
from ..tasks import Task, TaskError, load_run
from ..tasks.base import build_from_config, register_pretrained_loader
from ..tasks.rundir import write_json

FORMAT = "aigc_lib.zoo/1"
PREFIX = "pretrained:"  # 命令行里的写法：pretrained:lm-gpt
MODELS_DIR = Path(__file__).with_name("models")
SLICE = 200  # 测试集的前这么多个样本：来历里记下在它上面的指标，测试在 smoke 档位下也能很快复核
REFERENCE_SCRIPT = "python benchmarks/train_reference.py"


def slice_limit(task: Task) -> int:
    """复核用的测试切片有多大：默认 :data:`SLICE` 个样本；任务可以用类属性 ``zoo_slice`` 改小
    （sft 的 limit 按每种指令算，每条都要逐字生成，所以只取每种 20 条）。"""
    return getattr(task, "zoo_slice", SLICE)


@dataclass
class Pretrained:
    """一个读好的参考模型。``model`` 已在 eval 模式；``config`` 是重建它用的配置（含词表）。"""

    name: str
    task: Task
    model: nn.Module
    config: dict
    provenance: dict

    @property
    def vocab(self) -> Vocab:
        """模型的词表（拼音模型是目标一侧的汉字表；源一侧的音节表在 ``config["artifacts"]["src_vocab"]``）。"""
        artifacts = self.config["artifacts"]
        return Vocab.from_itos(artifacts["vocab"] if "vocab" in artifacts else artifacts["tgt_vocab"])

    @property
    def history(self) -> History:
        """参考模型的训练记录（每轮的损失、验证指标、学习率），``pretrained(...).history.plot()`` 画出训练曲线。"""
        return History(self.provenance.get("curve", []))

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def evaluate(self, split: str = "test", limit: int | None = None) -> dict:
        """在课程数据的一份上打分（与 ``aigc evaluate pretrained:名字`` 相同）。"""
        return self.task.evaluate(self.model, self.config, split, self.device, limit=limit)

    def predict(self, texts: list[str]) -> list[dict]:
        """预测几句话（与 ``aigc predict pretrained:名字 ...`` 相同），每句一个字典。"""
        return self.task.predict(self.model, self.config, list(texts), self.device)

    def generate(self, prompt: str = "", **options) -> str:
        """只对语言模型：续写 ``prompt``，返回新写的部分。选项同 ``aigc generate``：max_new_tokens、
        strategy（"sample" / "greedy"）、temperature、top_k、top_p、repetition_penalty、beam、stop、seed。"""
        if not hasattr(self.task, "generate"):
            raise TaskError(f"参考模型 {self.name} 是 {self.task.name} 任务的模型，不能续写文本；请用 lm-gpt 或 lm-lstm。")
        return self.task.generate(self.model, self.config, prompt, options)


# ---------------------------------------------------------------------------
# 读取
# ---------------------------------------------------------------------------


def names(models_dir: str | Path = MODELS_DIR) -> list[str]:
    """模型库里所有参考模型的名字（有权重文件的）。"""
    return sorted(p.stem for p in Path(models_dir).glob("*.safetensors"))


def provenance(name: str, models_dir: str | Path = MODELS_DIR) -> dict:
    """一个参考模型的来历（``名字.json`` 的内容）。"""
    _check_name(name, models_dir)
    path = Path(models_dir) / f"{name}.json"
    if not path.is_file():
        raise TaskError(f"参考模型 {name} 缺少来历文件 {path}（里面有权重的校验和与指标，没有它不能确认权重完好）。"
                        f"请重新安装课程，或用 {REFERENCE_SCRIPT} --only {name} 重新训练、导出。")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise TaskError(f"参考模型 {name} 的来历文件 {path} 损坏，读不出 JSON（{error}）。"
                        f"请重新安装课程，或用 {REFERENCE_SCRIPT} --only {name} 重新导出。") from None


def pretrained(name: str, device=None, models_dir: str | Path = MODELS_DIR) -> Pretrained:
    """读取模型库里的参考模型 ``name``（见 ``aigc pretrained list``），返回 :class:`Pretrained`。

    依次检查：有没有这个名字、来历文件在不在、权重文件的 sha256 与来历里记的是否相同（被截断、改坏都能发现）、
    张量与模型是否对得上（对不上时列出哪些键、形状不同）。任何一项不对都给出中文说明。
    """
    record = provenance(name, models_dir)
    path = Path(models_dir) / f"{name}.safetensors"
    tensors, metadata = _read_weights(path, record)
    config = json.loads(metadata["config"])
    task, model = build_from_config(config, path)
    expected = model.state_dict()
    for key, source in json.loads(metadata.get("tied", "{}")).items():  # 共享的权重只存了一份
        if source in tensors:
            tensors[key] = tensors[source]
    state = {k: v.to(expected[k].dtype) if k in expected and v.is_floating_point() else v for k, v in tensors.items()}
    load_model_state(model, state, source=str(path))
    return Pretrained(name, task, model.to(pick_device(device)).eval(), config, record)


register_pretrained_loader(pretrained)  # 让从参考模型出发的任务（sft）不必导入模型库


def load(run: str, device=None) -> tuple[Task, nn.Module, dict]:
    """命令行用：``run`` 是 ``pretrained:名字`` 时读模型库，否则是 ``aigc train`` 的运行目录。"""
    if str(run).startswith(PREFIX):
        found = pretrained(str(run)[len(PREFIX):], device=device)
        return found.task, found.model, found.config
    return load_run(run, device=device)


def catalog(models_dir: str | Path = MODELS_DIR) -> list[dict]:
    """``aigc pretrained list`` 的表：每个参考模型一行（名字、任务、模型及其解码方式、参数量、文件大小、
    测试集指标、训练轮数、用时和硬件）。"""
    rows = []
    for name in names(models_dir):
        record = provenance(name, models_dir)
        metric, decoding = record["metric"], record.get("decoding")
        model = record["model"]
        if decoding:  # 导出时挑好的解码设置（拼音：束搜索 + 语言模型浅融合 + 词二元重打分），表里的指标就是这样解码测的
            rescoring = f" + 词二元重打分 μ={decoding['word_weight']}" if "word_weight" in decoding else ""
            model += f"（束搜索 {decoding['beam_size']} + {decoding['lm']} 浅融合 λ={decoding['lm_weight']}{rescoring}）"
        rows.append({"name": name, "task": record["task"], "model": model,
                     "parameters": record["parameters"], "megabytes": round(record["weights"]["bytes"] / 2**20, 2),
                     "metric": metric, "test": record["metrics"]["test"][metric], "epochs": len(record["curve"]),
                     "train_minutes": round(record["training"]["wall_seconds"] / 60, 1),
                     "hardware": record["training"]["hardware"]})
    return rows


def catalog_markdown(models_dir: str | Path = MODELS_DIR) -> str:
    """README 里模型库那张表（Markdown）：由来历文件生成，测试核对 README 与它一致，表里的数不是手抄的。"""
    lines = ["| 名字 | 任务 | 模型 | 测试集指标 | 参数量 | 文件大小 | 怎样训练的 |", "|---|---|---|---|---|---|---|"]
    for row in catalog(models_dir):
        lines.append(f"| `{row['name']}` | {row['task']} | {row['model']} | {row['metric']} {row['test']:.4f} | "
                     f"{row['parameters']:,} | {row['megabytes']:.1f} MB | {row['epochs']} 轮，{row['train_minutes']:.0f} 分钟"
                     f"（{row['hardware']}） |")
    return "\n".join(lines)


def _check_name(name: str, models_dir) -> None:
    if not (Path(models_dir) / f"{name}.safetensors").is_file():
        known = names(models_dir)
        raise TaskError(f"模型库里没有 {name!r}。可用的有：{', '.join(known) or '（空）'}；用 aigc pretrained list 查看。")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_weights(path: Path, record: dict) -> tuple[dict, dict]:
    """读 safetensors 文件：先核对 sha256（来历里记的），再读张量和 metadata。"""
    from safetensors import SafetensorError, safe_open

    broken = (f"检查点文件损坏或不完整：{path}（{{}}）。请重新安装课程，"
              f"或用 {REFERENCE_SCRIPT} --only {record.get('name', path.stem)} 重新训练、导出。")
    expected = record.get("weights", {}).get("sha256")
    if expected is None:
        raise TaskError(f"来历文件里没有 {path.name} 的 sha256，无法确认权重完好。"
                        f"请用 {REFERENCE_SCRIPT} --export-only --only {path.stem} 重新导出。")
    if _sha256(path) != expected:
        size = path.stat().st_size
        raise TaskError(broken.format(f"sha256 与来历文件里记的不同；文件 {size:,} 字节，"
                                      f"应为 {record['weights'].get('bytes', '?'):,} 字节"))
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {key: f.get_tensor(key) for key in f.keys()}
    except (SafetensorError, OSError, ValueError) as error:
        raise TaskError(broken.format(f"safetensors 读不出来：{error}")) from None
    if metadata.get("format") != FORMAT or "config" not in metadata:
        raise TaskError(broken.format(f"文件头里没有 {FORMAT} 格式的 config"))
    return tensors, metadata


# ---------------------------------------------------------------------------
# 导出（benchmarks/train_reference.py 用）
# ---------------------------------------------------------------------------


def export_run(run_dir: str | Path, name: str, training: dict, models_dir: str | Path = MODELS_DIR,
               decoding: Callable[[Pretrained], dict] | None = None) -> Path:
    """把 ``aigc train`` 的一次训练导出成模型库里的 ``名字.safetensors`` + ``名字.json``，返回权重文件的路径。

    ``training``：训练的来历（命令、git 提交、种子、用时、硬件），原样写进来历文件。
    ``decoding``：可选，``decoding(读回的参考模型) -> 解码设置``，例如拼音模型在验证集上挑好的浅融合 λ 和重打分的 μ
    （:func:`~aigc_lib.tasks.pinyin.fusion.tune_fusion`、:func:`~aigc_lib.tasks.pinyin.rescoring.tune_rescoring`）。
    设置写进 config（``config["decoding"]``），之后评估、预测都按它解码；来历文件里记一份摘要。
    指标在**导出后**的权重（float16 存储）上重新测，所以来历里的数就是用户读到的模型的数。
    """
    run_dir, models_dir = Path(run_dir), Path(models_dir)
    models_dir.mkdir(parents=True, exist_ok=True)
    task, model, config = load_run(run_dir, device="cpu")
    state = unwrap_model(model).state_dict()
    tensors, tied, seen = {}, {}, {}
    for key, value in state.items():
        shared = seen.get((value.data_ptr(), value.shape, value.stride()))
        if shared is not None:  # 共享的权重（例如 GPT 输入嵌入与输出层）只存一份
            tied[key] = shared
            continue
        seen[(value.data_ptr(), value.shape, value.stride())] = key
        tensors[key] = (value.half() if value.is_floating_point() else value).contiguous()
    weights = models_dir / f"{name}.safetensors"
    history = json.loads((run_dir / "history.json").read_text(encoding="utf-8"))
    record = {"name": name, "task": config["task"], "model": config["model"], "metric": task.metric,
              "parameters": sum(p.numel() for p in model.parameters()), "training": training,
              "sizes": config["sizes"], "curve": [_curve_row(row) for row in history.get("records", [])]}
    _save_weights(weights, tensors, config, tied, record)  # 先写校验和，下面才能读回导出的权重
    loaded = pretrained(name, device="cpu", models_dir=models_dir)
    if decoding is not None:  # 在导出后的权重上挑解码设置，写进 config 再存一次（张量不变，文件头变了）
        config = {**config, "decoding": decoding(loaded)}
        record["decoding"] = _summary(config["decoding"])
        _save_weights(weights, tensors, config, tied, record)
        loaded = pretrained(name, device="cpu", models_dir=models_dir)
    record["metrics"] = {split: loaded.evaluate(split) for split in ("val", "test")}
    limit = slice_limit(loaded.task)
    record["slice"] = {"split": "test", "limit": limit, "metrics": loaded.evaluate("test", limit=limit)}
    write_json(models_dir / f"{name}.json", record)
    return weights


def _save_weights(weights: Path, tensors: dict, config: dict, tied: dict, record: dict) -> None:
    """写 safetensors（config 放在文件头），再把它的 sha256 和字节数写进来历文件 ``record``。"""
    from safetensors.torch import save_file

    tmp = weights.with_name(weights.name + ".tmp")
    save_file(tensors, str(tmp), metadata={"format": FORMAT, "name": weights.stem,
                                           "config": json.dumps(config, ensure_ascii=False), "tied": json.dumps(tied)})
    os.replace(tmp, weights)
    weights.chmod(0o644)  # 与仓库里其他文件一样，人人可读
    record["weights"] = {"sha256": _sha256(weights), "bytes": weights.stat().st_size, "dtype": "float16"}
    write_json(weights.with_suffix(".json"), record)


def _summary(spec: dict, most: int = 20) -> dict:
    """来历文件里的解码设置摘要：超过 ``most`` 项的表（例如拼音的读音表）只记项数，全文在权重文件的 config 里。"""
    return {key: f"{len(value)} 项（全文在权重文件的 config 里）" if isinstance(value, (dict, list)) and len(value) > most
            else value for key, value in spec.items()}


def _curve_row(row: dict) -> dict:
    """训练曲线的一行：轮次、损失、验证指标、学习率（去掉用时这类每台机器不同的数）。"""
    keep = {k: v for k, v in row.items() if k == "epoch" or k.startswith(("train_", "val_")) or k == "lr"}
    return {k: round(v, 6) if isinstance(v, float) else v for k, v in keep.items()}


__all__ = ["FORMAT", "PREFIX", "SLICE", "Pretrained", "catalog", "catalog_markdown", "export_run", "load", "names", "pretrained",
           "provenance", "slice_limit"]
