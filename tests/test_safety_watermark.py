"""绿名单水印：没有水印时的假阳性率不超过名义值（随机编号和真实的留出文本，很多个种子）；
lm-gpt 写的 200 字水印文本检出率 > 95%；改写越多检出率越低；watermark=None 不改变生成；aigc detect。"""

import math
import random

import pytest
import torch
from scipy.stats import binom, norm

from aigc_lib import generate, pretrained
from aigc_lib.safety.watermark import (
    Watermark,
    binomial_tail,
    detect_watermark,
    detection_rate,
    replace_tokens,
)

ALPHA = 0.01


@pytest.fixture(scope="module")
def gpt():
    return pretrained("lm-gpt")


@pytest.fixture(scope="module")
def watermarked(gpt):
    """lm-gpt 按默认设置（温度 1、全词表采样）带水印写的 20 段 200 字（编号，含 2 字的提示）。"""
    wm = Watermark("测试密钥")
    samples = []
    for seed in range(20):
        text = generate(gpt.model, "今天", 200, vocab=gpt.vocab, watermark=wm, seed=seed)
        samples.append(gpt.vocab.encode(list("今天" + text)))
    return wm, samples


def test_green_list_is_deterministic_and_has_gamma_share():
    wm = Watermark("k", gamma=0.25)
    a = wm.green_list(7, 1001)
    assert a.dtype == torch.bool and int(a.sum()) == round(0.25 * 1001)
    assert torch.equal(a, Watermark("k", gamma=0.25).green_list(7, 1001))
    assert not torch.equal(a, wm.green_list(8, 1001)) and not torch.equal(a, Watermark("k2").green_list(7, 1001))
    logits = torch.randn(2, 1001)
    assert torch.allclose(wm(logits, previous=7) - logits, 2.0 * a.float().expand(2, -1))


def test_counts_z_and_p_against_brute_force():
    rng = random.Random(0)
    for trial in range(30):
        V, T, gamma = rng.randint(20, 300), rng.randint(2, 120), rng.choice([0.25, 0.5])
        ids = [rng.randrange(V) for _ in range(T)]
        wm = Watermark(f"key{trial}", gamma=gamma)
        green = sum(bool(wm.green_list(p, V)[t]) for p, t in zip(ids[:-1], ids[1:]))
        result = detect_watermark(ids, V, wm, ignore_repeated=False)
        n = T - 1
        assert (result.green, result.scored) == (green, n)
        assert result.z == pytest.approx((green - gamma * n) / math.sqrt(n * gamma * (1 - gamma)))
        assert result.p_value == pytest.approx(binom.sf(green - 1, n, gamma), rel=1e-9, abs=1e-300)
        assert result.watermarked == (result.p_value <= ALPHA)
    repeated = [1, 2, 1, 2, 1, 2, 3]  # (1,2) 出现 3 次、(2,1) 2 次：去重后只剩 3 对
    assert detect_watermark(repeated, 10, "k").scored == 3 and detect_watermark(repeated, 10, "k", ignore_repeated=False).scored == 6


def test_exact_test_never_exceeds_alpha_while_normal_threshold_can():
    for n in range(5, 400, 13):
        # 没有水印时判为有水印的概率：对所有 g 把 P(G = g) 加起来，只加 p 值 <= alpha 的那些 g
        size = sum(binom.pmf(g, n, 0.25) for g in range(n + 1) if binomial_tail(g, n, 0.25) <= ALPHA)
        assert size <= ALPHA + 1e-12
    # 论文的正态近似：T = 200 时 z > 2.33 等于 g >= 65，真实的假阳性率 1.03% > 1 - Φ(2.33) = 0.99%
    assert binom.sf(64, 200, 0.25) > 1 - norm.cdf(2.33)


def test_false_positive_rate_on_unwatermarked_text_over_many_seeds(gpt):
    from aigc_lib.tasks.lm.task import split_text

    V = len(gpt.vocab)
    rng = random.Random(1)
    random_texts = [[rng.randrange(V) for _ in range(200)] for _ in range(1000)]
    held_out = gpt.vocab.encode(list(split_text("test")[:60_000]))
    human = [held_out[i:i + 200] for i in range(0, len(held_out) - 200, 200)]  # 约 300 段真人写的文字
    false_alarms, trials = 0, 0
    for seed in range(5):  # 每个密钥都是一次独立的"种子"
        wm = Watermark(f"种子{seed}")
        for texts in (random_texts[seed * 200:(seed + 1) * 200], human):
            false_alarms += round(detection_rate(texts, V, wm) * len(texts))
            trials += len(texts)
    # trials ≈ 2500 次，名义上限 1%：允许 3 个标准差的抽样误差；精确检验的真实假阳性率本身 <= 1%
    assert false_alarms / trials <= ALPHA + 3 * math.sqrt(ALPHA * (1 - ALPHA) / trials), (false_alarms, trials)


def test_detection_on_200_tokens_and_decreasing_under_edits(gpt, watermarked):
    wm, samples = watermarked
    V = len(gpt.vocab)
    assert all(len(s) == 202 for s in samples)
    assert detection_rate(samples, V, wm) > 0.95
    assert detection_rate(samples, V, Watermark("别的密钥")) <= 0.1  # 密钥不对就检测不到
    rates, mean_z = [], []
    for fraction in (0.0, 0.1, 0.2, 0.3, 0.6):
        edited = [replace_tokens(s, fraction, V, seed=i, protect_first=2) for i, s in enumerate(samples)]
        rates.append(detection_rate(edited, V, wm))
        mean_z.append(sum(detect_watermark(s, V, wm).z for s in edited) / len(edited))
    assert all(a >= b for a, b in zip(rates, rates[1:])), rates
    assert all(a > b for a, b in zip(mean_z, mean_z[1:])), mean_z  # z 随改写比例严格下降
    changed = replace_tokens(samples[0], 0.2, V, seed=0, protect_first=2)
    assert sum(a != b for a, b in zip(changed, samples[0])) == round(0.2 * 200) and changed[:2] == samples[0][:2]


def test_watermark_none_or_zero_delta_does_not_change_generation(gpt):
    for seed in range(3):
        plain = generate(gpt.model, "我们", 40, vocab=gpt.vocab, seed=seed, top_p=0.9)
        assert generate(gpt.model, "我们", 40, vocab=gpt.vocab, seed=seed, top_p=0.9, watermark=None) == plain
        assert generate(gpt.model, "我们", 40, vocab=gpt.vocab, seed=seed, top_p=0.9,
                        watermark=Watermark("k", delta=0.0)) == plain
    with pytest.raises(ValueError, match="gamma"):
        Watermark("k", gamma=1.5)


def test_cli_generate_with_watermark_then_detect(tmp_path, capsys):
    import json

    from aigc_lib.cli import main

    assert main(["generate", "pretrained:lm-gpt", "今天", "--watermark", "课程", "--seed", "3",
                 "--max-new-tokens", "150"]) == 0
    out = tmp_path / "out.txt"
    out.write_text(capsys.readouterr().out, encoding="utf-8")
    assert main(["detect", "课程", str(out), "--model", "pretrained:lm-gpt", "--json"]) == 0
    right = json.loads(capsys.readouterr().out)
    assert main(["detect", "别的", str(out), "--model", "pretrained:lm-gpt", "--json"]) == 0
    wrong = json.loads(capsys.readouterr().out)
    assert right["watermarked"] and right["p_value"] < 1e-6 and not wrong["watermarked"]
    gpt = pretrained("lm-gpt")  # CLI 的数与库函数一致
    assert out.read_text(encoding="utf-8") == "今天" + gpt.generate("今天", max_new_tokens=150, seed=3,
                                                                   watermark=Watermark("课程")) + "\n"
    expected = detect_watermark(gpt.vocab.encode(list(out.read_text(encoding="utf-8").rstrip("\n"))), len(gpt.vocab),
                                Watermark("课程"))
    assert right["z"] == pytest.approx(expected.z) and right["green"] == expected.green
    assert main(["detect", "课程", str(out), "--model", "pretrained:lm-gpt"]) == 0
    assert "结论：有水印" in capsys.readouterr().out
    assert main(["generate", "pretrained:lm-gpt", "今天", "--watermark", "k", "--beam", "2"]) == 2
    assert "--beam" in capsys.readouterr().err
    assert main(["detect", "k", str(out), "--model", "pretrained:ner"]) == 2
    assert "不是语言模型" in capsys.readouterr().err


def test_pretrained_generate_takes_a_watermark(gpt):
    """Python 里也一样：pretrained("lm-gpt").generate(..., watermark=Watermark(密钥))；不加水印的文本检测不出来。"""
    from aigc_lib.tasks import TaskError

    wm = Watermark("课程")
    marked = gpt.generate("今天", max_new_tokens=150, seed=3, watermark=wm)
    plain = gpt.generate("今天", max_new_tokens=150, seed=3)
    assert marked != plain and gpt.generate("今天", max_new_tokens=150, seed=3, watermark=None) == plain
    assert detect_watermark(gpt.vocab.encode(list(marked)), len(gpt.vocab), wm).watermarked
    assert not detect_watermark(gpt.vocab.encode(list(plain)), len(gpt.vocab), wm).watermarked
    with pytest.raises(TaskError, match="--beam"):
        gpt.generate("今天", beam=2, watermark=wm)
