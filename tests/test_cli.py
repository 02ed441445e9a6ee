"""aigc 命令端到端：train -> evaluate -> predict，单进程和 2 进程 torchrun（gloo）。"""

import json
import os
import socket
import subprocess
import sys

import pytest
import torch

from aigc_lib.cli import main

TINY = ["--epochs", "1", "--train-limit", "300", "--max-len", "24", "--vocab-size", "400",
        "--batch-size", "32", "--tokens", "char"]


def _env():
    env = dict(os.environ, AIGC_PROFILE="smoke", AIGC_PROGRESS="off", OMP_NUM_THREADS="1")
    return env


def _aigc(*args, timeout=240):
    return subprocess.run([sys.executable, "-m", "aigc_lib.cli", *args], capture_output=True, text=True,
                          env=_env(), timeout=timeout)


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


def test_evaluate_json_is_one_object_with_metrics_matching_predict(trained_run, capsys):
    assert main(["evaluate", str(trained_run), "--split", "val", "--json"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    result = json.loads(lines[0])
    for key in ("accuracy", "precision", "recall", "f1"):
        assert 0.0 <= result[key] <= 1.0
    from aigc_lib import load_reviews
    from aigc_lib.tasks import load_run

    # 用 predict 逐句预测同一份数据，数出的准确率必须与 evaluate 一致（两条路径编码方式相同）
    pairs = load_reviews("val")
    assert result["n"] == len(pairs)
    task, model, config = load_run(trained_run)
    rows = task.predict(model, config, [text for text, _ in pairs], torch.device("cpu"))
    correct = sum((row["label"] == "正面") == bool(label) for row, (_, label) in zip(rows, pairs))
    assert correct / len(pairs) == pytest.approx(result["accuracy"], abs=1e-12)


def test_predict_sentences_and_file(trained_run, tmp_path, capsys):
    assert main(["predict", str(trained_run), "这本书很好看", "物流太慢了", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert [r["text"] for r in rows] == ["这本书很好看", "物流太慢了"]
    for row in rows:
        assert row["label"] in ("正面", "负面")
        assert 0.5 <= row["probability"] <= 1.0
        assert (row["label"] == "正面") == (row["positive_probability"] >= 0.5)
    gbk = tmp_path / "texts.txt"
    gbk.write_bytes("质量很好\n\n太差了，退货\n".encode("gbk"))
    assert main(["predict", str(trained_run), "--file", str(gbk)]) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    assert [line.split("\t")[-1] for line in printed] == ["质量很好", "太差了，退货"]


def test_bad_arguments_and_missing_files_are_clear(tmp_path, capsys):
    assert main(["train", "--task", "poetry", "--model", "gru", "--out", str(tmp_path)]) == 2
    assert "没有名为 'poetry' 的任务" in capsys.readouterr().err
    assert main(["train", "--task", "sentiment", "--model", "cnn", "--out", str(tmp_path)]) == 2
    assert "可选：rnn, lstm, gru, transformer" in capsys.readouterr().err
    assert main(["train", "--task", "sentiment", "--model", "gru", "--out", str(tmp_path), "--heads", "2"]) == 2
    assert "不使用参数 --heads" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path / "nowhere")]) == 2
    assert "找不到训练结果" in capsys.readouterr().err
    (tmp_path / "empty.txt").write_bytes(b"")
    run = tmp_path / "fake"
    run.mkdir()
    torch.save({"model": {}}, run / "best.pt")
    assert main(["evaluate", str(run)]) == 2
    assert "不是 aigc train 写出的检查点" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["evaluate"])  # argparse：缺少位置参数
    assert "用法" in capsys.readouterr().err
    # argparse 自己发现的错误也用中文说明，并指向对应子命令的 --help
    for argv, expected in [
        (["evaluate"], "aigc evaluate：错误：缺少必需的参数：run。用 aigc evaluate --help 查看用法。"),
        (["frobnicate"], "没有子命令 'frobnicate'，可选："),
        (["course", "run", "--profile", "fast"], "参数 --profile 的值 'fast' 无效，可选："),
        (["course", "run", "--inplace", "--out", "x"], "参数 --out 和 --inplace 只能用一个"),
        (["train", "--task", "sentiment", "--model", "gru", "--out", "x", "--epochs", "abc"], "参数 --epochs 要一个整数，收到 'abc'"),
        (["train", "--task", "sentiment", "--model", "gru", "--out", "x", "--lr", "fast"], "参数 --lr 要一个数，收到 'fast'"),
        (["train", "--task", "sentiment", "--model", "gru", "--out"], "参数 --out 后面要跟一个值"),
        (["evaluate", "x", "--bogus"], "不认识的参数：--bogus"),
    ]:
        with pytest.raises(SystemExit) as stop:
            main(argv)
        err = capsys.readouterr().err
        assert stop.value.code == 2 and expected in err, (argv, err)
        assert "error" not in err and "invalid" not in err, err


def test_help_is_chinese():
    result = _aigc("--help")
    assert result.returncode == 0 and "训练" in result.stdout and "用法" in result.stdout
    for command in ("train", "evaluate", "predict"):
        sub = _aigc(command, "--help")
        assert sub.returncode == 0 and "显示帮助并退出" in sub.stdout


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_transformer_and_torchrun_two_processes(tmp_path):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={_free_port()}",
           "-m", "aigc_lib.cli", "train", "--task", "sentiment", "--model", "transformer", "--out", str(out),
           "--quiet", "--d-model", "16", "--heads", "2", "--layers", "1", *TINY]
    result = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.count("完成：") == 1  # 只有 rank 0 打印
    summary = json.loads((out / "summary.json").read_text("utf-8"))
    assert summary["world_size"] == 2 and summary["model"] == "transformer"
    evaluated = _aigc("evaluate", str(out), "--json")
    assert evaluated.returncode == 0, evaluated.stderr
    assert json.loads(evaluated.stdout)["model"] == "transformer"
