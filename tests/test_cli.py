"""aigc 命令端到端：train -> evaluate -> predict，单进程和 2 进程 torchrun（gloo）；由尺寸 dataclass 生成的参数；
在测试里登记一个玩具任务，经 aigc 训练、评估、预测。"""

import json
import re
import os
import socket
import subprocess
import sys

from dataclasses import dataclass

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from aigc_lib import cli
from aigc_lib.cli import main
from aigc_lib.tasks import TASKS, ModelSpec, Sizes, Task, TaskError, register, size, unregister
from aigc_lib.tasks.sizes import size_fields
from _cli import cli_env, run_aigc

TINY = ["--epochs", "1", "--train-limit", "300", "--max-tokens", "24", "--vocab-size", "400",
        "--batch-size", "32", "--tokens", "char"]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "gru"
    assert main(["train", "--task", "sentiment", "--model", "gru", "--out", str(out), "--quiet",
                 "--embed-dim", "16", "--hidden-dim", "16", *TINY]) == 0
    return out


def test_train_writes_run_folder(trained_run):
    for name in ("best.pt", "last.pt", "history.json", "summary.json"):
        assert (trained_run / name).is_file(), name
    summary = json.loads((trained_run / "summary.json").read_text("utf-8"))
    assert summary["task"] == "sentiment" and summary["model"] == "gru" and summary["epochs_run"] == 1
    assert summary["sizes"]["hidden_dim"] == 16 and summary["sizes"]["tokens"] == "char"
    ckpt = torch.load(trained_run / "best.pt", weights_only=True)  # 检查点只含安全的类型
    assert ckpt["config"]["task"] == "sentiment"


def test_weight_decay_skips_biases_and_norm_weights(trained_run):
    """任务默认的 AdamW：矩阵（嵌入、线性层、RNN 的权重矩阵）衰减 --weight-decay，偏置等一维张量不衰减。"""
    from aigc_lib.tasks import load_run

    _, model, config = load_run(trained_run)
    groups = torch.load(trained_run / "last.pt", weights_only=True)["optimizer"]["param_groups"]
    # 优化器状态里的参数编号是按组重新数的，所以这里比较每组的参数个数
    count = {group["weight_decay"]: len(group["params"]) for group in groups}
    matrices = sum(p.dim() >= 2 for p in model.parameters())
    assert count == {config["sizes"]["weight_decay"]: matrices, 0.0: sum(p.dim() < 2 for p in model.parameters())}
    assert matrices and config["sizes"]["weight_decay"] == 0.01


def test_evaluate_json_is_one_object_with_metrics_matching_predict(trained_run, capsys):
    assert main(["evaluate", str(trained_run), "--split", "val", "--json"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    result = json.loads(lines[0])
    from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score

    from aigc_lib import load_reviews
    from aigc_lib.tasks import load_run

    # 用 predict 逐句预测同一份数据，再用 scikit-learn 独立重算 evaluate 报告的每个指标（正类是"正面"=1）
    pairs = load_reviews("val")
    assert result["n"] == len(pairs)
    task, model, config = load_run(trained_run)
    rows = task.predict(model, config, [text for text, _ in pairs], torch.device("cpu"))
    y_true = [label for _, label in pairs]
    y_pred = [int(row["label"] == "正面") for row in rows]
    assert y_pred == [int(row["positive_probability"] >= 0.5) for row in rows]
    expected = {"accuracy": accuracy_score(y_true, y_pred), "precision": precision_score(y_true, y_pred),
                "recall": recall_score(y_true, y_pred), "f1": f1_score(y_true, y_pred),
                "macro_f1": f1_score(y_true, y_pred, average="macro")}
    # 精确率与召回率不相等时，把两者对调的错误才能被这个测试发现
    assert expected["precision"] != pytest.approx(expected["recall"])
    assert {key: result[key] for key in expected} == pytest.approx(expected, abs=1e-12)


def test_predict_sentences_and_file(trained_run, tmp_path, capsys):
    assert main(["predict", str(trained_run), "这本书很好看", "物流太慢了", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert [r["text"] for r in rows] == ["这本书很好看", "物流太慢了"]
    for row in rows:
        assert row["label"] in ("正面", "负面")
        assert 0.5 <= row["probability"] <= 1.0
        assert (row["label"] == "正面") == (row["positive_probability"] >= 0.5)
    # 选项写在句子前面、中间也可以，句子的顺序不变
    for argv in (["--json", "这本书很好看", "物流太慢了"], ["这本书很好看", "--json", "物流太慢了"]):
        assert main(["predict", str(trained_run), *argv]) == 0
        assert [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()] == rows
    assert main(["predict", str(trained_run), "--json", "很好", "--no-such-flag"]) == 2
    assert "不认识的参数：--no-such-flag" in capsys.readouterr().err
    # 清洗后什么也没剩下的句子（只有表情、网址、空白）：说清楚是哪几句，而不是给一个没有根据的"负面 0.59"
    assert main(["predict", str(trained_run), "很好", "😀😀", "https://example.com", "   "]) == 2
    err = capsys.readouterr().err
    assert "第 2 句 '😀😀'、第 3 句 'https://example.com'、第 4 句 '   ' 清洗后什么也没剩下" in err, err
    assert "第 1 句" not in err and err.count("\n") == 1
    gbk = tmp_path / "texts.txt"
    gbk.write_bytes("质量很好\n\n太差了，退货\n".encode("gbk"))
    assert main(["predict", str(trained_run), "--file", str(gbk)]) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    assert [line.split("\t")[-1] for line in printed] == ["质量很好", "太差了，退货"]
    # 表格文件取文本列：列名和标签不会被当成句子
    table = tmp_path / "mine.csv"
    table.write_text("评论,情感\n质量很好,1\n太差了，退货,0\n", encoding="utf-8")
    assert main(["predict", str(trained_run), "--file", str(table), "--text-col", "评论"]) == 0
    assert [line.split("\t")[-1] for line in capsys.readouterr().out.strip().splitlines()] == ["质量很好", "太差了，退货"]
    assert main(["predict", str(trained_run), "--file", str(table)]) == 2
    assert "没有名为 'text' 的列" in (err := capsys.readouterr().err) and "--text-col" in err
    # 纯文本文件不看 --text-col：写了就说清楚，而不是悄悄不用
    assert main(["predict", str(trained_run), "--file", str(gbk), "--text-col", "评论"]) == 2
    assert "--text-col 只用于表格文件" in capsys.readouterr().err
    # --file - 从管道读，编码与文件一样自动识别
    piped = subprocess.run([sys.executable, "-m", "aigc_lib.cli", "predict", str(trained_run), "--file", "-"],
                           input="质量很好\n\n太差了，退货\n".encode("gbk"), capture_output=True, env=cli_env(),
                           timeout=120)
    assert piped.returncode == 0, piped.stderr.decode("utf-8", "replace")
    assert [line.split("\t")[-1] for line in piped.stdout.decode("utf-8").strip().splitlines()] == ["质量很好", "太差了，退货"]


def test_bad_arguments_and_missing_files_are_clear(tmp_path, capsys):
    assert main(["train", "--task", "poetry", "--model", "gru", "--out", str(tmp_path)]) == 2
    assert "--task 只能是 sentiment | segment | pos | ner | lm | pinyin | sft，收到 'poetry'" in capsys.readouterr().err
    assert main(["train", "--task", "sentiment", "--model", "cnn", "--out", str(tmp_path)]) == 2
    assert "可选：rnn, lstm, gru, transformer" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path / "nowhere")]) == 2
    assert "找不到训练结果" in capsys.readouterr().err
    run = tmp_path / "fake"
    run.mkdir()
    torch.save({"model": {}}, run / "best.pt")
    assert main(["evaluate", str(run)]) == 2
    assert "不是 aigc train 写出的检查点" in capsys.readouterr().err
    # 命令行写错：一行中文说明，指向对应子命令的 --help，退出码 2；argparse 的英文提示一个字也不出现
    for argv, expected in [
        (["evaluate"], "aigc evaluate：错误：缺少必需的参数：运行目录（或 pretrained:名字）。用 aigc evaluate --help 查看用法。"),
        (["train", "--model", "gru", "--out", "x"], "aigc train：错误：缺少必需的参数：--task。"),
        (["frobnicate"], "aigc：错误：没有子命令 'frobnicate'，可选：train, evaluate"),
        (["course", "frob"], "aigc course：错误：没有子命令 'frob'，可选：run, build"),
        (["course", "run", "--profile", "fast"], "参数 --profile 只能是 smoke | cpu | gpu，收到 'fast'"),
        (["course", "run", "--inplace", "--out", "x"], "参数 --inplace 和 --out 只能用一个"),
        (["train", "--task", "sentiment", "--model", "gru", "--out", "x", "--epochs", "abc"],
         "参数 --epochs 要一个整数，收到 'abc'"),
        (["train", "--task", "sentiment", "--model", "gru", "--out", "x", "--lr", "fast"], "参数 --lr 要一个数，收到 'fast'"),
        (["train", "--task", "sentiment", "--model", "gru", "--out", "x", "--tokens", "bpe"],
         "参数 --tokens 只能是 word | char，收到 'bpe'"),
        (["train", "--task", "sentiment", "--model", "gru", "--out"], "参数 --out 后面要跟一个值"),
        (["train", "--task", "sentiment", "--model", "gru", "--out", "x", "--quiet=1"], "参数 --quiet 不带值"),
        (["evaluate", "x", "--bogus"], "aigc evaluate：错误：不认识的参数：--bogus。用 aigc evaluate --help 查看用法。"),
        (["evaluate", "x", "--js"], "不认识的参数：--js"),  # 不接受缩写（allow_abbrev=False）
        (["generate", "x", "今天", "明天"], "只能给一段提示，多出来的是：明天。提示里有空格时请用引号括起来"),
        (["detect"], "缺少必需的参数：密钥、文件、--model"),
    ]:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert expected in err and err.count("\n") == 1, (argv, err)
        assert "error" not in err and "invalid" not in err and "usage" not in err, err


# ---------------------------------------------------------------------------
# 尺寸参数：由每个任务的尺寸 dataclass 生成
# ---------------------------------------------------------------------------


def _all_size_fields():
    """[(任务, 模型, SizeField), ...]：所有已登记任务的所有模型的所有尺寸。"""
    return [(task, model, f) for task in TASKS.values() for model, spec in task.models.items()
            for f in size_fields(spec.sizes)]


def _train_help(monkeypatch, capsys) -> str:
    monkeypatch.setenv("COLUMNS", "2000")  # 不折行：每个参数的说明在同一行
    with pytest.raises(SystemExit) as stop:
        main(["train", "--help"])
    assert stop.value.code == 0
    return capsys.readouterr().out


def test_every_size_of_every_task_is_a_flag_with_its_help_and_users(monkeypatch, capsys):
    text = _train_help(monkeypatch, capsys)
    lines, current = {}, None
    for line in text.splitlines():  # 一个参数一条：以 "  --" 开头，说明太靠右时会接在下一行
        if line.startswith("  --"):
            current = line.split()[0].rstrip(",")
            lines[current] = line
        elif current and line.startswith("    "):
            lines[current] += " " + line.strip()
        else:
            current = None
    fields = _all_size_fields()
    assert {f.name for _, _, f in fields} >= {"val_limit", "aligned", "max_tokens", "split_len", "context_len",
                                               "max_chars", "num_heads", "num_layers", "num_decoder_layers", "min_freq"}
    for task, model, f in fields:
        line = lines[f.flag]
        assert f.help in line, (f.flag, line)
        assert task.name in line.split(f.help, 1)[1].split("；")[0], (task.name, line)  # 说明后面写着用它的任务
        if f.kind is bool:
            assert line.startswith(f"  {f.flag}, --no-{f.flag[2:]} "), line
    # 旧名字全部不见了（每个意思一个名字）
    for old in ("--max-len", "--block-size", "--heads", "--layers", "--decoder-layers", "--min-count"):
        assert old not in lines
    assert "用法" in text and "显示帮助并退出" in text


def _other_value(task, model, f):
    """一个合法、且与默认值不同的值，以及写在命令行上的样子。"""
    default = task.sizes(model)[f.name]
    if f.kind is bool:
        return (not default), [f.flag if not default else "--no-" + f.flag[2:]]
    if f.choices:
        value = next(c for c in f.choices if c != default)
    elif f.kind is int:
        value = default * 2 if default else default + 3  # 翻倍：d_model 仍能被 num_heads 整除
    elif f.below is not None:
        value = 0.25 if default != 0.25 else 0.5
    else:
        value = default * 2 + 0.5
    return value, [f.flag, str(value)]


def test_each_flag_sets_its_size_and_nothing_else(monkeypatch):
    monkeypatch.setenv("AIGC_PROFILE", "smoke")
    for task, model, f in _all_size_fields():
        value, argv = _other_value(task, model, f)
        args = cli._parse(["train", "--task", task.name, "--model", model, "--out", "x", *argv])
        sizes = task.sizes(model, cli._size_overrides(args))
        assert sizes == dict(task.sizes(model), **{f.name: value}), (task.name, model, f.name)


def test_defaults_follow_the_profile_when_sizes_are_built(monkeypatch):
    task = TASKS["sentiment"]
    monkeypatch.setenv("AIGC_PROFILE", "smoke")
    smoke = task.sizes("gru")
    monkeypatch.setenv("AIGC_PROFILE", "cpu")
    cpu = task.sizes("gru")
    assert (smoke["epochs"], smoke["max_tokens"], smoke["embed_dim"]) == (1, 64, 32)
    assert (cpu["epochs"], cpu["max_tokens"], cpu["embed_dim"]) == (6, 160, 128)
    assert cpu["lr"] == 2e-3 and task.sizes("transformer")["lr"] == 5e-4  # 模型自己的默认值


@pytest.fixture
def no_data(monkeypatch):
    """任何任务一旦开始准备数据就失败：参数错误必须在此之前发现。"""
    def fail(self, sizes):
        raise AssertionError("参数检查应在准备数据之前")
    for task in TASKS.values():
        monkeypatch.setattr(type(task), "prepare", fail)


def test_a_flag_the_model_does_not_use_is_an_error(no_data, capsys):
    every = {f.flag: f for _, _, f in _all_size_fields()}
    for task in TASKS.values():
        for model, spec in task.models.items():
            used = {f.flag for f in size_fields(spec.sizes)}
            for flag in sorted(set(every) - used):
                _, argv = _other_value(*next((t, m, f) for t, m, f in _all_size_fields() if f.flag == flag))
                assert main(["train", "--task", task.name, "--model", model, "--out", "x", *argv]) == 2
                err = capsys.readouterr().err
                assert f"任务 {task.name} 的模型 {model} 不使用参数 {flag}" in err, err
                assert all(u in err.split("可以调整的有：")[1] for u in used)


@pytest.mark.parametrize("flag, value, expected", [
    ("--epochs", "0", "参数 --epochs 要大于等于 1 的整数，收到 0"),
    ("--batch-size", "0", "参数 --batch-size 要大于等于 1 的整数，收到 0"),
    ("--dropout", "1.5", "参数 --dropout 要[0, 1) 之间的数，收到 1.5"),
    ("--dropout", "-0.1", "参数 --dropout 要[0, 1) 之间的数，收到 -0.1"),
    ("--lr", "0", "参数 --lr 要大于 0 的数，收到 0.0"),
    ("--lr", "-0.001", "参数 --lr 要大于 0 的数，收到 -0.001"),
    ("--train-limit", "-1", "参数 --train-limit 要大于等于 0 的整数，收到 -1"),
    ("--weight-decay", "-1", "参数 --weight-decay 要大于等于 0 的数，收到 -1.0"),
    ("--pooling", "sum", "参数 --pooling 只能是 last | mean | max，收到 'sum'"),
    ("--pooling", "avg", "参数 --pooling 只能是 last | mean | max，收到 'avg'"),
    ("--train-limit", "-790", "参数 --train-limit 要大于等于 0 的整数，收到 -790"),
    ("--max-tokens", "0", "参数 --max-tokens 要大于等于 1 的整数，收到 0"),
    ("--hidden-dim", "0", "参数 --hidden-dim 要大于等于 1 的整数，收到 0"),
    ("--vocab-size", "1", "参数 --vocab-size 要大于等于 3 的整数，收到 1"),
    ("--lr", "nan", "参数 --lr 要一个有限的数，收到 nan"),
    ("--dropout", "inf", "参数 --dropout 要一个有限的数，收到 inf"),
    ("--device", "tpu", "参数 --device：不认识的设备 'tpu'：请用 cpu、cuda、cuda:1 或 mps"),
    ("--seed", "4294967296", "参数 --seed 要[0, 4294967295] 之间的整数，收到 4294967296"),
])
def test_out_of_range_values_fail_before_any_data_is_loaded(no_data, capsys, flag, value, expected):
    assert main(["train", "--task", "sentiment", "--model", "gru", "--out", "x", flag, value]) == 2
    err = capsys.readouterr().err
    assert err == f"aigc train：错误：{expected}。用 aigc train --help 查看用法。\n"


def test_sizes_that_do_not_fit_together_fail_before_any_data_is_loaded(no_data, capsys):
    """单看都合法、合在一起不行的：d_model 不能被头数整除（三个有注意力的任务都一样）。"""
    for task, model in (("sentiment", "transformer"), ("lm", "gpt"), ("pinyin", "seq2seq")):
        assert main(["train", "--task", task, "--model", model, "--out", "x", "--d-model", "30",
                     "--num-heads", "4"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("aigc train：错误：参数 --d-model（30）要能被 --num-heads（4）整除") and "--d-model 28" in err
        assert err.count("\n") == 1


def test_device_and_mixed_precision_the_machine_cannot_run_fail_before_any_data_is_loaded(no_data, capsys):
    if not torch.cuda.is_available():
        assert main(["train", "--task", "sentiment", "--model", "gru", "--out", "x", "--device", "cuda"]) == 2
        assert "本机没有可用的 CUDA GPU" in capsys.readouterr().err
        assert main(["evaluate", "x", "--device", "cuda:0"]) == 2  # 每个子命令的 --device 都先检查
        assert "本机没有可用的 CUDA GPU" in capsys.readouterr().err
    assert main(["train", "--task", "sentiment", "--model", "gru", "--out", "x", "--device", "cpu",
                 "--amp", "fp16"]) == 2
    assert "CPU 上的混合精度只能用 bf16 或 auto（命令行 --amp bf16" in capsys.readouterr().err


@pytest.mark.parametrize("flag, value, expected", [
    ("--temperature", "nan", "参数 --temperature 要一个有限的数，收到 nan"),
    ("--temperature", "0", "参数 --temperature 要大于 0 的数，收到 0.0"),
    ("--top-p", "0", "参数 --top-p 要(0, 1] 之间的数，收到 0.0"),
    ("--top-p", "1.5", "参数 --top-p 要(0, 1] 之间的数，收到 1.5"),
    ("--top-k", "0", "参数 --top-k 要大于等于 1 的整数，收到 0"),
    ("--beam", "0", "参数 --beam 要大于等于 1 的整数，收到 0"),
    ("--max-new-tokens", "0", f"参数 --max-new-tokens 要[1, {cli.MAX_NEW_TOKENS}] 之间的整数，收到 0"),
    ("--max-new-tokens", "1000000", f"参数 --max-new-tokens 要[1, {cli.MAX_NEW_TOKENS}] 之间的整数，收到 1000000"),
    ("--repetition-penalty", "-1", "参数 --repetition-penalty 要大于 0 的数，收到 -1.0"),
])
def test_generation_values_are_checked_before_the_model_is_loaded(flag, value, expected, capsys, monkeypatch):
    import aigc_lib.tasks as tasks

    monkeypatch.setattr(tasks, "load_run", lambda *a, **k: pytest.fail("参数检查应在读取模型之前"))
    assert main(["generate", "no-such-run", "今天", flag, value]) == 2
    assert capsys.readouterr().err == f"aigc generate：错误：{expected}。用 aigc generate --help 查看用法。\n"


@pytest.mark.parametrize("argv, expected", [
    (["--greedy", "--beam", "3"], "--greedy 和 --beam 只能选一个（--beam 1 就是贪心）"),
    (["--greedy", "--temperature", "0.5", "--top-p", "0.5"], "--temperature、--top-p 只用于采样（默认的解码方式），和 --greedy"),
    (["--beam", "2", "--top-k", "5"], "--top-k 只用于采样（默认的解码方式），和 --beam 一起写不起作用"),
    (["--length-penalty", "0.5"], "--length-penalty 只用于束搜索：请同时写 --beam N"),
    (["--watermark-delta", "5"], "--watermark-delta 只在加水印时有用：请同时写 --watermark 密钥"),
])
def test_generation_flags_that_would_do_nothing_are_refused(argv, expected, capsys, monkeypatch):
    # 以前这些组合被悄悄接受：--greedy 下的温度、没有 --watermark 的水印强度都不起作用
    import aigc_lib.tasks as tasks

    monkeypatch.setattr(tasks, "load_run", lambda *a, **k: pytest.fail("参数检查应在读取模型之前"))
    assert main(["generate", "no-such-run", "今天", *argv]) == 2
    assert capsys.readouterr().err.startswith(f"aigc generate：错误：{expected}")


def test_the_real_command_answers_bad_values_with_one_chinese_line_and_exit_2():
    """真正的 aigc 命令（子进程）：不打印堆栈，只有一行中文说明，退出码 2。"""
    for args, expected in (
        (["train", "--task", "sentiment", "--model", "gru", "--out", "x", "--epochs", "0"], "--epochs"),
        (["train", "--task", "sentiment", "--model", "gru", "--out", "x", "--device", "tpu"], "--device"),
        (["train", "--task", "lm", "--model", "gpt", "--out", "x", "--d-model", "30", "--num-heads", "4"], "整除"),
        (["train", "--task", "sentiment", "--model", "gru", "--out", "x", "--device", "cpu", "--amp", "fp16"], "bf16"),
        (["generate", "x", "--temperature", "nan"], "--temperature"),
    ):
        result = run_aigc(*args, timeout=120)
        assert result.returncode == 2, (args, result.stderr)
        assert "Traceback" not in result.stderr and result.stderr.count("\n") == 1, result.stderr
        assert expected in result.stderr and result.stdout == ""


def test_python_overrides_are_checked_like_flags():
    task = TASKS["lm"]
    with pytest.raises(TaskError, match="参数 --context-len 要大于等于 2 的整数，收到 1"):
        task.sizes("gpt", {"context_len": 1})
    with pytest.raises(TaskError, match="参数 --aligned 要 True 或 False"):
        TASKS["pinyin"].sizes("seq2seq", {"aligned": "yes"})


# ---------------------------------------------------------------------------
# 新增一个任务只动它自己：在测试里定义、登记、经 aigc 训练、评估、预测
# ---------------------------------------------------------------------------


@dataclass
class ToySizes(Sizes):
    epochs: int = size("训练轮数", smoke=3, cpu=5, at_least=1)
    batch_size: int = size("每批样本数", 16, at_least=1)
    lr: float = size("峰值学习率（AdamW，先预热再余弦衰减）", 0.1, above=0)
    toy_width: int = size("玩具模型隐藏层宽度", 8, at_least=1)


class ToyNet(nn.Module):
    """两个数 -> 两类（和是否大于 0）。"""

    def __init__(self, width: int):
        super().__init__()
        self.config = {"width": width}
        self.net = nn.Sequential(nn.Linear(2, width), nn.Tanh(), nn.Linear(width, 2))

    def forward(self, x):
        return self.net(x)


def _toy_data(n, seed):
    x = torch.randn(n, 2, generator=torch.Generator().manual_seed(seed))
    return x, (x.sum(1) > 0).long()


class ToyTask(Task):
    name = "toy"
    description = "玩具任务：两个数的和是否大于 0"
    models = {"mlp": ModelSpec(lambda sizes, artifacts: ToyNet(sizes["toy_width"]), ToyNet, ToySizes)}

    def prepare(self, sizes):
        train = DataLoader(TensorDataset(*_toy_data(256, 0)), batch_size=sizes["batch_size"], shuffle=True)
        return train, DataLoader(TensorDataset(*_toy_data(64, 1))), {"labels": ["否", "是"]}

    def evaluate(self, model, config, split, device, limit=None):
        x, y = _toy_data(200, {"train": 0, "val": 1, "test": 2}[split])
        x, y = x[:limit], y[:limit]
        with torch.no_grad():
            pred = model(x.to(device)).argmax(-1).cpu()
        return {"task": self.name, "split": split, "n": len(y), "accuracy": (pred == y).float().mean().item()}

    def predict(self, model, config, inputs, device):
        x = torch.tensor([[float(v) for v in text.split()] for text in inputs])
        with torch.no_grad():
            pred = model(x.to(device)).argmax(-1).tolist()
        return [{"text": text, "label": config["artifacts"]["labels"][p]} for text, p in zip(inputs, pred)]


@pytest.fixture
def toy():
    task = register(ToyTask())
    yield task
    unregister("toy")
    assert "toy" not in TASKS


def test_a_task_registered_from_outside_trains_evaluates_and_predicts(toy, tmp_path, capsys, monkeypatch):
    text = _train_help(monkeypatch, capsys)
    assert "--toy-width N" in text and "玩具模型隐藏层宽度 [toy]" in text and "[sentiment、segment、pos、ner、lm、pinyin、sft、toy]" in text
    out = tmp_path / "toy"
    assert main(["train", "--task", "toy", "--model", "mlp", "--out", str(out), "--quiet", "--toy-width", "12",
                 "--epochs", "4"]) == 0
    summary = json.loads((out / "summary.json").read_text("utf-8"))
    assert summary["sizes"] == {"weight_decay": 0.01, "epochs": 4, "batch_size": 16, "lr": 0.1, "toy_width": 12}
    assert summary["parameters"] == (2 * 12 + 12) + (12 * 2 + 2)
    capsys.readouterr()
    assert main(["evaluate", str(out), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["n"] == 200 and result["accuracy"] > 0.9
    assert main(["predict", str(out), "3 2", "-5 1", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["label"] for r in rows] == ["是", "否"]
    # 别的任务不认 toy 的参数
    assert main(["train", "--task", "lm", "--model", "gpt", "--out", str(tmp_path / "x"), "--toy-width", "3"]) == 2
    assert "不使用参数 --toy-width" in capsys.readouterr().err


def test_register_rejects_a_size_name_with_another_meaning():
    @dataclass
    class Clash(Sizes):
        epochs: float = size("训练轮数", 1.0, at_least=1)

    class ClashTask(ToyTask):
        name = "clash"
        models = {"mlp": ModelSpec(ToyTask.models["mlp"].build, ToyNet, Clash)}

    with pytest.raises(ValueError, match="epochs"):
        register(ClashTask())
    assert "clash" not in TASKS


def test_help_is_chinese(capsys):
    result = run_aigc("--help")
    assert result.returncode == 0 and "训练" in result.stdout and "用法" in result.stdout
    assert "usage" not in result.stdout and "options" not in result.stdout
    for command in ("train", "evaluate", "predict", "generate", "course"):
        sub = run_aigc(command, "--help")
        assert sub.returncode == 0 and "显示帮助并退出" in sub.stdout and "用法：aigc " + command in sub.stdout
        assert "usage" not in sub.stdout and "options" not in sub.stdout and "positional" not in sub.stdout
    # 参数值的占位名也不是 argparse 默认的大写英文变量名（--device DEVICE、run）
    for command in (["train"], ["evaluate"], ["predict"], ["generate"], ["chat"], ["mask"], ["detect"], ["pretrained"],
                    ["course", "run"], ["course", "build"]):
        with pytest.raises(SystemExit):
            main([*command, "--help"])
        text = capsys.readouterr().out
        assert not re.search(r"--[a-z-]+ [A-Z][A-Z_]+\b", text), (command, text)
        assert not re.search(r"^  (run|texts|prompt|key|file|action) ", text, re.M), (command, text)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_transformer_and_torchrun_two_processes(tmp_path):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={_free_port()}",
           "-m", "aigc_lib.cli", "train", "--task", "sentiment", "--model", "transformer", "--out", str(out),
           "--d-model", "16", "--num-heads", "2", "--num-layers", "1", *TINY]
    result = subprocess.run(cmd, capture_output=True, encoding="utf-8", env=cli_env(), timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    # 只有 rank 0 打印：每轮的小结、“完成”，进度条（写在 stderr）也只有一个进程画
    assert result.stdout.count("完成：") == 1 and result.stdout.count("第 1/1 轮") == 1, result.stdout
    summary = json.loads((out / "summary.json").read_text("utf-8"))
    assert summary["world_size"] == 2 and summary["model"] == "transformer"
    evaluated = run_aigc("evaluate", str(out), "--json")
    assert evaluated.returncode == 0, evaluated.stderr
    assert json.loads(evaluated.stdout)["model"] == "transformer"


# ---------------------------------------------------------------------------
# 运行目录：先检查能不能写，不覆盖另一次训练，两次训练不同时写同一个目录
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("make_out, expected", [
    (lambda tmp: "", "--out 不能是空的"),
    (lambda tmp: (tmp / "file.txt").write_text("x") and str(tmp / "file.txt"), "是一个已有的文件"),
    (lambda tmp: "/proc/aigc-course-test/run", "无法在 --out /proc/aigc-course-test/run 里写文件"),
])
def test_an_output_directory_that_cannot_be_used_fails_before_any_data_is_loaded(
        no_data, tmp_path, capsys, make_out, expected):
    if expected.startswith("无法") and not os.path.isdir("/proc"):
        pytest.skip("这台机器没有 /proc")
    assert main(["train", "--task", "sentiment", "--model", "gru", "--out", make_out(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert expected in err and err.count("\n") == 1


def test_another_run_is_never_overwritten_without_overwrite(trained_run, tmp_path, capsys):
    import shutil

    out = tmp_path / "run"
    shutil.copytree(trained_run, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    argv = ["train", "--task", "sentiment", "--model", "lstm", "--out", str(out), "--quiet",
            "--embed-dim", "16", "--hidden-dim", "16", *TINY]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"--out {out} 里已经有任务 sentiment、模型 gru 的训练结果" in err and "--overwrite" in err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # 一个字节都没动
    assert main([*argv, "--overwrite"]) == 0
    capsys.readouterr()
    summary = json.loads((out / "summary.json").read_text("utf-8"))
    assert summary["model"] == "lstm"
    assert {p.name for p in out.iterdir()} == {"best.pt", "last.pt", "history.json", "summary.json", ".aigc.lock"}


def test_overwrite_that_fails_before_writing_anything_gives_the_old_run_back(trained_run, tmp_path, capsys):
    # --overwrite 加上了，新的训练却在准备数据时就出错（片段比文本还长）：旧的训练不能因此丢掉
    import shutil

    out = tmp_path / "run"
    shutil.copytree(trained_run, out)
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    argv = ["train", "--task", "lm", "--model", "gpt", "--out", str(out), "--quiet", "--overwrite",
            "--context-len", "9999999", *TINY]
    assert main(argv) == 2
    assert "--context-len" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before  # 一个字节都没变
    assert not (out / ".aigc-old").exists()
    (out / "summary.json").write_text('{"mine": true}', encoding="utf-8")  # 不是 aigc train 写的 summary.json
    assert main(["train", "--task", "sentiment", "--model", "gru", "--out", str(out), "--quiet", *TINY]) == 2
    err = capsys.readouterr().err
    assert "另一次训练（或别的程序）留下的文件" in err and "None" not in err


def _hold_lock(path):
    """另一个进程占着运行目录的锁（像一次正在进行的训练），返回它的 Popen。"""
    code = ("import os, sys, time; from filelock import FileLock; p = sys.argv[1]; "
            "lock = FileLock(os.path.join(p, '.aigc.lock')); lock.acquire(); "
            "open(os.path.join(p, '.aigc.pid'), 'w').write(str(os.getpid())); print('ready', flush=True); "
            "time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "ready"
    return holder


def test_a_directory_being_written_by_another_run_is_refused_with_its_pid(tmp_path, capsys):
    from aigc_lib.tasks.rundir import claim

    holder = _hold_lock(tmp_path)
    try:
        with pytest.raises(TaskError, match=f"另一个 aigc train（进程号 {holder.pid}）正在往"):
            with claim(tmp_path):
                pass
        result = run_aigc("train", "--task", "sentiment", "--model", "gru", "--out", str(tmp_path), *TINY)
        assert result.returncode == 2 and f"进程号 {holder.pid}" in result.stderr
        assert "Traceback" not in result.stderr and result.stderr.count("\n") == 1
        # 那次训练还没写出第一个检查点：续训、评估都说它还在进行，而不是"没有训练""请先运行 aigc train"
        assert main(["train", "--resume", str(tmp_path)]) == 2
        assert f"另一个 aigc train（进程号 {holder.pid}）正在往" in (err := capsys.readouterr().err), err
        assert main(["evaluate", str(tmp_path)]) == 2
        assert f"的训练（进程号 {holder.pid}）还在进行，还没有保存第一个检查点" in capsys.readouterr().err
    finally:
        holder.kill()
        holder.wait()
    # 占着锁的进程被 kill 之后，操作系统释放了锁：留下的锁文件不再挡路
    with claim(tmp_path) as path:
        assert (path / ".aigc.pid").read_text() == str(os.getpid())
    assert not (tmp_path / ".aigc.pid").exists()
    (tmp_path / ".aigc.pid").write_text("12345")  # 被 kill -9 的训练留下的进程号文件：锁已释放，不算在进行
    assert main(["evaluate", str(tmp_path)]) == 2
    assert "请先运行 aigc train" in capsys.readouterr().err


def test_json_files_are_replaced_whole_or_not_at_all(tmp_path, monkeypatch):
    import pathlib

    from aigc_lib.tasks.rundir import write_json

    target = tmp_path / "summary.json"
    write_json(target, {"task": "sentiment"})
    real_write_text = pathlib.Path.write_text

    def killed_halfway(self, text, *args, **kwargs):  # 写到一半进程被杀（磁盘满、Ctrl-C……）
        real_write_text(self, text[: len(text) // 2], *args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(pathlib.Path, "write_text", killed_halfway)
    with pytest.raises(KeyboardInterrupt):
        write_json(target, {"task": "lm", "model": "gpt", "sizes": list(range(50))})
    monkeypatch.undo()
    assert json.loads(target.read_text("utf-8")) == {"task": "sentiment"}  # 旧文件完整
    write_json(target, {"task": "lm", "名字": "中文"})
    assert json.loads(target.read_text("utf-8")) == {"task": "lm", "名字": "中文"}


# ---------------------------------------------------------------------------
# 续训：被 SIGTERM 打断的训练用 aigc train --resume 继续，权重与一口气训练完的完全相同
# ---------------------------------------------------------------------------

# 第 N 轮写完检查点之后给自己发 SIGTERM（像作业调度器或 kill 那样），其余就是真正的 aigc 命令
_TERM_AFTER_EPOCH = """
import os, signal, sys
from aigc_lib import cli
from aigc_lib.core import training
real = training._FitLoop._end_of_epoch
def end_of_epoch(self, record):
    real(self, record)
    if record["epoch"] == int(os.environ["TERM_AFTER_EPOCH"]):
        os.kill(os.getpid(), signal.SIGTERM)
training._FitLoop._end_of_epoch = end_of_epoch
sys.exit(cli.main())
"""

RESUME_RUN = ["--task", "sentiment", "--model", "gru", "--quiet", "--embed-dim", "16", "--hidden-dim", "16",
              *TINY[2:], "--epochs", "3"]


def _state(path):
    return torch.load(path, weights_only=True)["model"]


@pytest.mark.skipif(sys.platform == "win32", reason="Windows 上 os.kill(pid, SIGTERM) 直接结束进程（TerminateProcess），不发信号")
def test_a_run_stopped_by_sigterm_resumes_from_the_cli_to_the_same_weights(tmp_path):
    whole = run_aigc("train", *RESUME_RUN, "--out", str(tmp_path / "whole"))
    assert whole.returncode == 0, whole.stderr[-2000:]

    out = tmp_path / "stopped"
    script = tmp_path / "term_after_epoch.py"
    script.write_text(_TERM_AFTER_EPOCH, "utf-8")
    stopped = subprocess.run([sys.executable, str(script), "train", *RESUME_RUN, "--out", str(out)],
                             capture_output=True, encoding="utf-8", env=dict(cli_env(), TERM_AFTER_EPOCH="1"),
                             timeout=240)
    assert stopped.returncode == 130, stopped.stderr[-2000:]
    assert stopped.stderr.strip().splitlines()[-1] == f"已中断，可用 aigc train --resume {out} 继续"
    assert "Traceback" not in stopped.stderr and "完成" not in stopped.stdout
    summary = json.loads((out / "summary.json").read_text("utf-8"))
    assert summary["interrupted"] is True and summary["epochs_run"] == 1
    assert torch.load(out / "last.pt", weights_only=True)["epoch"] == 1
    evaluated = run_aigc("evaluate", str(out), "--json")  # 被打断的训练也能评估（读 best.pt）
    assert evaluated.returncode == 0 and json.loads(evaluated.stdout)["model"] == "gru", evaluated.stderr

    # 同一条命令再跑一次不会悄悄从第 1 轮重来，而是指向 --resume
    again = run_aigc("train", *RESUME_RUN, "--out", str(out))
    assert again.returncode == 2 and f"aigc train --resume {out}" in again.stderr

    resumed = run_aigc("train", "--resume", str(out), "--quiet")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text("utf-8"))
    assert summary["interrupted"] is False and summary["epochs_run"] == 3
    for name in ("last.pt", "best.pt"):
        expected, got = _state(tmp_path / "whole" / name), _state(out / name)
        assert expected.keys() == got.keys()
        assert all(torch.equal(expected[k], got[k]) for k in expected), name
    assert json.loads((out / "history.json").read_text("utf-8"))["records"][2]["train_loss"] == \
        json.loads((tmp_path / "whole" / "history.json").read_text("utf-8"))["records"][2]["train_loss"]


def test_compile_that_cannot_work_is_refused_before_training_and_skipped_on_resume(trained_run, tmp_path,
                                                                                  monkeypatch, capsys):
    """编译不了（compile_problem 给出原因）：aigc train --compile 在占用运行目录、准备数据之前就报错；
    一次用 --compile 开始的训练换到编译不了的机器上续训时，不编译、照常续训，并说一声。"""
    import shutil

    from aigc_lib.tasks import base

    monkeypatch.setattr(base, "compile_problem", lambda dev: "torch.compile 在 CPU 上要用 C++ 编译器，这里用不了（测试）")
    out = tmp_path / "new"
    assert main(["train", "--task", "sentiment", "--model", "gru", "--out", str(out), "--quiet", "--compile",
                 *TINY]) == 2
    err = capsys.readouterr().err
    assert "这里用不了（测试）（命令行：去掉 --compile）" in err and err.count("\n") == 1 and not out.exists()

    run = tmp_path / "compiled"
    shutil.copytree(trained_run, run)
    real = base.load_checkpoint  # 让 resume_run 读到 compile=True：就像在有编译器的机器上用 --compile 开始的
    monkeypatch.setattr(base, "load_checkpoint",
                        lambda path, **kw: (c := real(path, **kw)) | {"config": {**c["config"], "compile": True}})
    assert main(["train", "--resume", str(run), "--quiet"]) == 0
    assert "这次训练开始时用了 --compile，这台机器上编译不了，续训不编译" in capsys.readouterr().err


@pytest.mark.parametrize("extra, expected", [
    (["--task", "sentiment"], "参数 --resume 不能和 --task 一起用"),
    (["--out", "x", "--epochs", "5"], "参数 --resume 不能和 --out、--epochs 一起用"),
    (["--seed", "1", "--overwrite"], "参数 --resume 不能和 --seed、--overwrite 一起用"),
])
def test_resume_refuses_flags_that_the_run_already_fixes(extra, expected, tmp_path, capsys):
    assert main(["train", "--resume", str(tmp_path), *extra]) == 2
    err = capsys.readouterr().err
    assert expected in err and err.count("\n") == 1


def test_resume_refuses_a_directory_without_a_run_and_one_that_is_being_written(trained_run, tmp_path):
    empty = run_aigc("train", "--resume", str(tmp_path))
    assert empty.returncode == 2 and f"{tmp_path} 里没有可以续训的训练" in empty.stderr
    assert "Traceback" not in empty.stderr and empty.stderr.count("\n") == 1
    import shutil

    out = tmp_path / "run"
    shutil.copytree(trained_run, out)
    holder = _hold_lock(out)
    try:
        busy = run_aigc("train", "--resume", str(out))
        assert busy.returncode == 2 and f"进程号 {holder.pid}" in busy.stderr, busy.stderr
    finally:
        holder.kill()
        holder.wait()


# ---------------------------------------------------------------------------
# 用户能改正的错误：一两行中文、退出码 2、没有堆栈；--debug 或 AIGC_DEBUG=1 才显示堆栈
# ---------------------------------------------------------------------------


def _fails_cleanly(result, *expected, lines=1):
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    assert "Traceback" not in result.stderr and result.stderr.count("\n") == lines, result.stderr
    for text in expected:
        assert text in result.stderr, result.stderr


def test_a_bogus_profile_is_one_chinese_line_and_debug_shows_the_traceback(tmp_path):
    argv = [sys.executable, "-m", "aigc_lib.cli", "train", "--task", "sentiment", "--model", "gru",
            "--out", str(tmp_path / "x")]
    bogus = dict(cli_env(), AIGC_PROFILE="bogus")
    bogus.pop("AIGC_DEBUG", None)
    result = subprocess.run(argv, capture_output=True, encoding="utf-8", env=bogus, timeout=120)
    _fails_cleanly(result, "aigc train：错误：环境变量 AIGC_PROFILE='bogus' 无效：只能是 smoke | cpu | gpu")
    for debug_env, debug_flag in (({"AIGC_DEBUG": "1"}, []), ({}, ["--debug"])):
        shown = subprocess.run(argv[:3] + debug_flag + argv[3:], capture_output=True, encoding="utf-8",
                               env=dict(bogus, **debug_env), timeout=120)
        assert shown.returncode != 0 and "Traceback (most recent call last)" in shown.stderr
        assert "AIGC_PROFILE='bogus' 无效" in shown.stderr.splitlines()[-1]


def test_nan_loss_names_the_step_and_suggests_flags_not_python_arguments(tmp_path):
    result = run_aigc("train", "--task", "sentiment", "--model", "gru", "--out", str(tmp_path / "nan"), "--quiet",
                   "--embed-dim", "16", "--hidden-dim", "16", *TINY, "--lr", "1e30")
    _fails_cleanly(result, "aigc train：错误：第 1 轮第 ", "的损失是 ", "训练已停止", "--lr", "--amp off", lines=2)
    assert "clip_grad_norm" not in result.stderr and "amp='off'" not in result.stderr


def test_bad_files_and_bad_checkpoints_are_one_line_each(trained_run, tmp_path):
    binary = tmp_path / "photo.txt"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" * 10)
    _fails_cleanly(run_aigc("predict", str(trained_run), "--file", str(binary)), f"文件 {binary} 看起来是二进制文件")
    _fails_cleanly(run_aigc("evaluate", str(trained_run / "history.json")), "是一个 JSON 文件，不是检查点")
    assert "Python 对象" not in run_aigc("evaluate", str(trained_run / "history.json")).stderr
    weights = torch.load(trained_run / "best.pt", weights_only=True)["model"]
    largest = max(weights.values(), key=lambda t: t.numel()).numpy().tobytes()

    def flip_a_weight(data):  # torch.load 照样读得出来，只是一个权重悄悄变了
        at = data.index(largest) + len(largest) // 2
        return data[:at] + bytes([data[at] ^ 4]) + data[at + 1:]

    for name, damage in (("empty.pt", lambda data: b""), ("cut.pt", lambda data: data[: len(data) // 2]),
                         ("flipped.pt", flip_a_weight)):
        broken = tmp_path / name
        broken.write_bytes(damage((trained_run / "best.pt").read_bytes()))
        _fails_cleanly(run_aigc("evaluate", str(broken)), f"检查点文件损坏或不完整：{broken}")


@pytest.mark.parametrize("error", [
    # CPU 上 PyTorch 分配不到内存时抛的是普通 RuntimeError（英文），不是程序的错：说清楚该调小什么
    RuntimeError("[enforce fail at alloc_cpu.cpp:127] data. DefaultCPUAllocator: can't allocate memory: "
                 "you tried to allocate 213600000000 bytes. Error code 12 (Cannot allocate memory)"),
    torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB"),  # GPU 显存不够
    MemoryError(),  # Python 自己分配不到内存
], ids=["cpu", "gpu", "python"])
def test_out_of_memory_is_the_users_to_fix(error, monkeypatch, capsys, trained_run):
    def too_big(args):
        raise error

    monkeypatch.setattr(cli, "_evaluate", too_big)
    assert main(["evaluate", str(trained_run)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("aigc evaluate：错误：显存（或内存）不够：把 --batch-size 调小") and "内部错误" not in err


def test_output_into_a_closed_pipe_stops_quietly(tmp_path):
    # aigc predict ... --file 大文件 | head -1：head 读完一行就关掉管道，aigc 不该报"读写文件失败"，也不该打印堆栈
    import subprocess

    from _cli import cli_env

    many = tmp_path / "many.txt"
    many.write_text("质量很好，物流也快\n物流太慢了\n" * 2000, encoding="utf-8")
    process = subprocess.Popen([sys.executable, "-m", "aigc_lib.cli", "predict", "pretrained:sentiment-gru", "--file",
                                str(many)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=cli_env())
    assert "质量很好，物流也快" in process.stdout.readline().decode("utf-8")
    process.stdout.close()
    err = process.stderr.read().decode("utf-8")
    assert process.wait(timeout=120) == 1
    assert err == "", err


def test_a_bug_prints_one_line_with_the_debug_hint_and_debug_raises(monkeypatch, capsys, trained_run):
    def broken(args):
        raise ZeroDivisionError("division by zero")

    monkeypatch.delenv("AIGC_DEBUG", raising=False)
    monkeypatch.setattr(cli, "_evaluate", broken)
    assert main(["evaluate", str(trained_run)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("aigc evaluate：内部错误 ZeroDivisionError：division by zero\n")
    assert "--debug" in err and "AIGC_DEBUG=1" in err and "Traceback" not in err
    with pytest.raises(ZeroDivisionError):
        main(["--debug", "evaluate", str(trained_run)])
    monkeypatch.setenv("AIGC_DEBUG", "1")
    with pytest.raises(ZeroDivisionError):
        main(["evaluate", str(trained_run)])
