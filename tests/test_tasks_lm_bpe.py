"""语言模型任务的 BPE 词元（--tokens bpe）与每字比特数 bits_per_char：与逐个位置的暴力计算对照。"""

import json
import math
import random

import pytest
import torch
import torch.nn.functional as F

from aigc_lib.cli import main
from aigc_lib.data.bpe import BPETokenizer, train_bpe
from aigc_lib.models import GPTLanguageModel
from aigc_lib.tasks import get_task, load_run
from aigc_lib.tasks.lm import task as lm_task
from aigc_lib.tasks.lm import char_vocab, make_blocks, split_text
from aigc_lib.tasks.lm.task import CharTokenizer, characters_ended, score_text

ALPHABET = "人民日报今天北京，。的了是在有不\n abcXYZ12😀é"


def random_text(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(ALPHABET) for _ in range(n))


def brute_force_characters(text: str, tokenizer, ids: list[int], first: int, last: int) -> int:
    """目标词元 ids[first:last] 写完了几个字：逐字找它最后一个字节的位置，落在这些词元的字节范围里就算。"""
    token_bytes = [len(tokenizer.token_bytes(i)) for i in ids]
    start, end = sum(token_bytes[:first]), sum(token_bytes[:last])  # 目标词元占的字节 [start, end)
    count, offset = 0, 0
    for ch in text:
        offset += len(ch.encode("utf-8"))  # 这个字的最后一个字节是第 offset - 1 个字节
        count += start <= offset - 1 < end
    return count


def brute_force_nll(model, x: torch.Tensor, y: torch.Tensor) -> float:
    """每个目标位置单独算：只把它之前（含）的输入喂给模型，取最后一个位置的对数概率。"""
    total = 0.0
    with torch.no_grad():
        for block, target in zip(x, y):
            for t in range(len(block)):
                log_probs = F.log_softmax(model(block[None, : t + 1])[0, -1].double(), -1)
                total -= log_probs[target[t]].item()
    return total


@pytest.mark.parametrize("seed", range(6))
def test_bpe_bits_per_char_equals_brute_force_on_tiny_texts(seed):
    rng = random.Random(seed)
    torch.manual_seed(seed)
    tokenizer = train_bpe(random_text(rng, 400), vocab_size=256 + rng.randint(5, 40))
    text = random_text(rng, rng.randint(30, 60))
    context = rng.randint(3, 6)
    model = GPTLanguageModel(len(tokenizer), d_model=8, num_heads=2, num_layers=1, dropout=0.0,
                             context_len=context).eval()
    limit = rng.choice([None, 2])
    got = score_text(model, tokenizer, text, context, "cpu", limit)

    ids = tokenizer.encode(text)
    x, y = make_blocks(torch.tensor(ids), context)
    x, y = x[:limit], y[:limit]
    assert got["tokens"] == y.numel()
    assert got["nll"] == pytest.approx(brute_force_nll(model, x, y), rel=1e-5)
    assert got["characters"] == brute_force_characters(text, tokenizer, ids, 1, y.numel() + 1)


@pytest.mark.parametrize("seed", range(20))
def test_every_character_ends_in_exactly_one_token(seed):
    """所有词元的“结束字数”加起来正好是字数；按字的词元每个都是 1。"""
    rng = random.Random(seed)
    tokenizer = train_bpe(random_text(rng, 300), vocab_size=256 + rng.randint(1, 60))
    text = random_text(rng, rng.randint(1, 80))
    ids = tokenizer.encode(text)
    ended = characters_ended(tokenizer, ids)
    assert int(ended.sum()) == len(text)
    for cut in range(len(ids) + 1):  # 任意前缀：它写完的字数 = 前缀字节里完整的字
        prefix = b"".join(tokenizer.token_bytes(i) for i in ids[:cut])
        assert int(ended[:cut].sum()) == len(prefix.decode("utf-8", errors="ignore"))
    chars = CharTokenizer(char_vocab(text + "\n"))
    assert characters_ended(chars, chars.encode(text)).tolist() == [1] * len(text)


def test_char_model_bits_per_char_is_cross_entropy_over_ln2():
    """按字的模型：bits_per_char = 同一批目标上的平均交叉熵 / ln 2，字数就是目标数。"""
    for seed in range(5):
        torch.manual_seed(seed)
        text = random_text(random.Random(seed), 200)
        tokenizer = CharTokenizer(char_vocab(text))
        model = GPTLanguageModel(len(tokenizer), d_model=8, num_heads=2, num_layers=1, context_len=8).eval()
        got = score_text(model, tokenizer, text, 8, "cpu")
        x, y = make_blocks(torch.tensor(tokenizer.encode(text)), 8)
        with torch.no_grad():
            loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten()).item()
        assert got["characters"] == got["tokens"] == y.numel()
        bits_per_char = got["nll"] / math.log(2) / got["characters"]
        assert bits_per_char == pytest.approx(loss / math.log(2), rel=1e-5)


def test_aigc_train_tokens_bpe_then_evaluate_and_generate(tmp_path, capsys):
    run = tmp_path / "bpe"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AIGC_PROFILE", "smoke")
        patch.setattr(lm_task, "split_text", lambda split, limit=0: split_text(split, limit or 60))
        assert main(["train", "--task", "lm", "--model", "gpt", "--tokens", "bpe", "--bpe-vocab-size", "300",
                     "--out", str(run), "--epochs", "1", "--train-limit", "200", "--context-len", "16",
                     "--samples-per-epoch", "32", "--val-blocks", "8", "--d-model", "16", "--num-heads", "2",
                     "--num-layers", "1", "--quiet"]) == 0
        capsys.readouterr()
        assert main(["evaluate", str(run), "--split", "val", "--json"]) == 0
        result = json.loads(capsys.readouterr().out.strip())

        task, model, config = load_run(run)
        merges = config["artifacts"]["merges"]
        tokenizer = BPETokenizer([tuple(m) for m in merges])
        # 合并表与在同一段训练文本上重新训练的 BPE 相同，模型的词表大小就是它的大小
        assert tokenizer.merges == train_bpe(split_text("train", 200), 300).merges
        assert model.config["vocab_size"] == len(tokenizer) == 300
        text = lm_task.split_text("val")
        ids = tokenizer.encode(text)
        x, y = make_blocks(torch.tensor(ids), 16)
        assert result["tokens"] == y.numel()
        assert result["characters"] == brute_force_characters(text, tokenizer, ids, 1, y.numel() + 1)
        with torch.no_grad():
            nll = F.cross_entropy(model(x).flatten(0, 1), y.flatten(), reduction="sum").item()
        assert result["cross_entropy"] == pytest.approx(nll / y.numel(), rel=1e-5)
        assert result["bits_per_char"] == pytest.approx(nll / math.log(2) / result["characters"], rel=1e-5)

        # 生成：命令行打印 提示 + 续写，续写与在 Python 里用同样选项解码出的文本相同
        assert main(["generate", str(run), "人民", "--max-new-tokens", "12", "--greedy"]) == 0
        printed = capsys.readouterr().out.rstrip("\n")
        expected = get_task("lm").generate(model, config, "人民", {"max_new_tokens": 12, "strategy": "greedy"})
        assert printed == "人民" + expected
        # 贪心的续写就是反复取 argmax 的词元再解码
        ids = tokenizer.encode("人民")
        with torch.no_grad():
            for _ in range(12):
                ids.append(int(model(torch.tensor([ids[-16:]]))[0, -1].argmax()))
        assert expected == tokenizer.decode(ids[len(tokenizer.encode("人民")):])
        # 停止符：在第一个停止符后截断
        stopped = get_task("lm").generate(model, config, "", {"max_new_tokens": 40, "seed": 0, "stop": "，。"})
        assert not any(ch in stopped[:-1] for ch in "，。")


def test_tokens_flag_is_shared_and_each_task_checks_its_own_choices(tmp_path, capsys):
    """--tokens 在情感任务里是 word | char，在语言模型里是 char | bpe：命令行接受并集，各任务再按自己的检查。"""
    common = ["--out", str(tmp_path / "x"), "--quiet"]
    assert main(["train", "--task", "lm", "--model", "gpt", *common, "--tokens", "word"]) == 2
    assert "--tokens 只能是 char | bpe，收到 'word'" in capsys.readouterr().err
    assert main(["train", "--task", "sentiment", "--model", "gru", *common, "--tokens", "bpe"]) == 2
    assert "--tokens 只能是 word | char，收到 'bpe'" in capsys.readouterr().err
    assert main(["train", "--task", "lm", "--model", "gpt", *common, "--tokens", "bytes"]) == 2
    assert "--tokens 只能是 word | char | bpe" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_same_named_sizes_still_need_the_same_type_and_range():
    from aigc_lib.tasks.sizes import SizeField

    words = SizeField("tokens", str, ("word", "char"))
    assert words.same_meaning(SizeField("tokens", str, ("char", "bpe")))
    assert not words.same_meaning(SizeField("tokens", int, (1, 2)))
    assert not words.same_meaning(SizeField("tokens", str))  # 任意字符串 vs 几个可选值：不是一个意思
    assert not SizeField("epochs", int, at_least=1).same_meaning(SizeField("epochs", int, at_least=0))
