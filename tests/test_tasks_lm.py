"""任务 lm 端到端（极小尺寸）：aigc train -> evaluate --json（perplexity）-> generate / predict，两种模型。"""

import json
import math

import pytest
import torch
import torch.nn.functional as F

from aigc_lib.cli import main
from aigc_lib.tasks import get_task, load_run
from aigc_lib.tasks.lm import task as lm_task
from aigc_lib.tasks.lm import SEPARATOR, char_vocab, make_blocks, split_text

TINY = ["--epochs", "1", "--train-limit", "300", "--context-len", "16", "--samples-per-epoch", "160",
        "--val-blocks", "16", "--batch-size", "16", "--lr", "0.01", "--quiet"]
SIZES = {"gpt": ["--d-model", "16", "--num-heads", "2", "--num-layers", "1"],
         "lstm": ["--embed-dim", "16", "--hidden-dim", "24", "--num-layers", "1"]}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    # 验证集和测试集各只取前 300 句，评估才快；走的仍是完整的 train / evaluate / generate 流程
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AIGC_PROFILE", "smoke")
        patch.setattr(lm_task, "split_text", lambda split, limit=0: split_text(split, limit or 300))
        out = {}
        for family in ("gpt", "lstm"):
            out[family] = tmp_path_factory.mktemp("runs") / family
            assert main(["train", "--task", "lm", "--model", family, "--out", str(out[family]), *TINY,
                         *SIZES[family]]) == 0
        yield out


def test_blocks_are_shifted_copies_of_the_text():
    for n, size in [(10, 4), (17, 16), (100, 7), (8, 7)]:
        ids = torch.arange(n) * 3
        x, y = make_blocks(ids, size)
        assert x.shape == y.shape == ((n - 1) // size, size)
        flat_x, flat_y = x.flatten().tolist(), y.flatten().tolist()
        assert flat_x == ids[: len(flat_x)].tolist() and flat_y == ids[1 : len(flat_y) + 1].tolist()
    text = split_text("val", 50)
    assert text.count(SEPARATOR) == 50 and text.endswith(SEPARATOR)
    vocab = char_vocab(text)
    assert SEPARATOR in vocab and vocab.coverage([list(text)]) == 1.0


def test_evaluate_reports_perplexity_from_mean_cross_entropy(runs, capsys):
    for family, run in runs.items():
        assert main(["evaluate", str(run), "--split", "val", "--json"]) == 0
        result = json.loads(capsys.readouterr().out.strip())
        assert result["task"] == "lm" and result["model"] == family
        assert result["perplexity"] == pytest.approx(math.exp(result["cross_entropy"]), rel=1e-9)
        assert result["bits_per_char"] == pytest.approx(result["cross_entropy"] / math.log(2), rel=1e-9)
        # 独立地再算一遍：逐个片段求对数概率之和，除以字数
        task, model, config = load_run(run)
        vocab_size = len(config["artifacts"]["vocab"])
        assert result["perplexity"] < vocab_size  # 训练过的模型比"均匀地猜"好
        ids = torch.tensor(task._vocab(config).encode(list(split_text("val", 300))))
        x, y = make_blocks(ids, 16)
        with torch.no_grad():
            log_probs = F.log_softmax(model(x).double(), -1)  # (N, T, V)
            total = -log_probs.gather(-1, y[:, :, None]).sum().item()
        assert result["tokens"] == y.numel()
        assert result["cross_entropy"] == pytest.approx(total / y.numel(), rel=1e-5)


def test_generate_command_prints_prompt_and_continuation(runs, capsys):
    for run in runs.values():
        assert main(["generate", str(run), "人民", "--max-new-tokens", "12", "--seed", "1", "--top-p", "0.9"]) == 0
        first = capsys.readouterr().out.rstrip("\n")
        assert first.startswith("人民") and 2 < len(first) <= 14
        assert main(["generate", str(run), "人民", "--max-new-tokens", "12", "--seed", "1", "--top-p", "0.9"]) == 0
        assert capsys.readouterr().out.rstrip("\n") == first  # 同一个种子，同样的结果
        assert main(["generate", str(run), "--max-new-tokens", "12", "--seed", "1", "--top-p", "0.9", "人民"]) == 0
        assert capsys.readouterr().out.rstrip("\n") == first  # 提示写在选项后面也一样

        outputs = []
        for flags in (["--greedy"], ["--greedy", "--no-cache"], ["--beam", "1"]):
            assert main(["generate", str(run), "人民", "--max-new-tokens", "10", *flags]) == 0
            outputs.append(capsys.readouterr().out)
        assert outputs[0] == outputs[1] == outputs[2]  # 缓存不改变结果；束宽 1 就是贪心

        assert main(["generate", str(run), "--max-new-tokens", "8", "--beam", "3", "--length-penalty", "0.5"]) == 0
        assert 0 < len(capsys.readouterr().out.rstrip("\n")) <= 8  # 空提示：从一句话的开头写起
        assert main(["generate", str(run), "今天", "--max-new-tokens", "30", "--stop", "，。", "--seed", "0",
                     "--temperature", "0.7", "--top-k", "5", "--repetition-penalty", "1.3"]) == 0
        text = capsys.readouterr().out.rstrip("\n")[2:]
        assert all(ch not in "，。" for ch in text[:-1])

        assert main(["predict", str(run), "中国", "北京", "--json"]) == 0
        rows = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
        assert [r["prompt"] for r in rows] == ["中国", "北京"] and all(r["text"] for r in rows)


def test_lm_errors_are_clear(runs, tmp_path, capsys):
    assert main(["generate", str(runs["gpt"]), "人民", "--temperature", "0"]) == 2
    assert "temperature" in capsys.readouterr().err
    assert main(["train", "--task", "lm", "--model", "rnn", "--out", str(tmp_path)]) == 2
    assert "可选：gpt, lstm" in capsys.readouterr().err
    assert main(["train", "--task", "lm", "--model", "gpt", "--out", str(tmp_path), "--pooling", "max"]) == 2
    assert "不使用参数 --pooling" in capsys.readouterr().err
    # 不是语言模型的运行目录：说明 generate 只用于 lm
    from aigc_lib.core.checkpoint import save_checkpoint
    from aigc_lib.models import RNNClassifier

    classifier = RNNClassifier(10, kind="gru", embed_dim=4, hidden_dim=4)
    save_checkpoint(tmp_path / "best.pt", classifier, config={
        "task": "sentiment", "model": "gru", "model_config": classifier.config, "sizes": {}, "artifacts": {}})
    assert main(["generate", str(tmp_path), "你好"]) == 2
    assert "只用于 aigc train --task lm" in capsys.readouterr().err
    assert list(get_task("lm").models) == ["gpt", "lstm"]
