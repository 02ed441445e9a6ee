"""个人信息：身份证校验码、Luhn 对照独立实现和公开的例子；遮盖不改片段之外的文字；测试集上的分数；aigc mask。"""

import random
import re
import sys

import pytest

from aigc_lib.safety.pii import TAGS, Span, find_pii, id_check_code, is_valid_id_number, luhn_valid, mask_pii
from aigc_lib.safety.pii_testset import make_pii_testset, pii_scores
from _cli import run_aigc

KINDS = ["phone", "id_card", "bank_card", "email", "qq", "person", "place"]


# ---- 独立实现：换一种写法的同一个定义


def iso7064_mod11_2_ok(number: str) -> bool:
    """ISO 7064 MOD 11-2 的"整体"形式：18 位（X 记为 10）按权重 2^(18-i) 加权，和 mod 11 等于 1。"""
    values = [10 if c in "Xx" else int(c) for c in number]
    return sum(v * pow(2, 17 - i) for i, v in enumerate(values)) % 11 == 1


def luhn_by_digit_sums(number: str) -> bool:
    """Luhn 的另一种写法：从右数第 2、4……位乘 2 后把乘积的各位数字相加。"""
    digits = [int(c) for c in number][::-1]
    total = sum(d if i % 2 == 0 else sum(int(c) for c in str(2 * d)) for i, d in enumerate(digits))
    return total % 10 == 0


def test_id_check_code_against_public_examples_and_iso7064():
    assert is_valid_id_number("11010519491231002X")  # GB 11643-1999 标准里的例子
    assert is_valid_id_number("440524188001010014") is False  # 1880 年出生：日期不合理（校验码本身是对的）
    assert iso7064_mod11_2_ok("440524188001010014")
    rng = random.Random(0)
    for _ in range(3000):
        first17 = str(rng.randint(1, 9)) + "".join(rng.choice("0123456789") for _ in range(16))
        # 穷举 11 个可能的校验码，恰好一个满足 ISO 7064
        valid = [c for c in "0123456789X" if iso7064_mod11_2_ok(first17 + c)]
        assert valid == [id_check_code(first17)]


def test_id_number_rejects_every_single_digit_error_and_bad_dates():
    rng = random.Random(1)
    for _ in range(300):
        first17 = rng.choice(["11", "44", "51"]) + "0105" + f"{rng.randint(1901, 2020)}{rng.randint(1, 12):02d}" \
            f"{rng.randint(1, 28):02d}" + f"{rng.randint(0, 999):03d}"
        number = first17 + id_check_code(first17)
        assert is_valid_id_number(number)
        i = rng.randrange(18)
        wrong = number[:i] + rng.choice([c for c in "0123456789" if c != number[i]]) + number[i + 1:]
        if i == 0 and wrong[0] == "0":
            continue
        assert iso7064_mod11_2_ok(wrong) is False  # MOD 11-2 发现所有单个数字的错误
        assert is_valid_id_number(wrong) is False
    bad_date = "11010519490231" + "002"  # 2 月 31 日
    assert iso7064_mod11_2_ok(bad_date + id_check_code(bad_date))
    assert not is_valid_id_number(bad_date + id_check_code(bad_date))


def test_luhn_against_known_numbers_and_independent_version():
    for number in ["79927398713", "4111111111111111", "5500000000000004", "378282246310005", "6011111111111117"]:
        assert luhn_valid(number)
    for number in ["79927398710", "4111111111111112", "1234567812345678"]:
        assert not luhn_valid(number)
    rng = random.Random(2)
    for _ in range(3000):
        number = "".join(rng.choice("0123456789") for _ in range(rng.randint(2, 19)))
        assert luhn_valid(number) == luhn_by_digit_sums(number)
    with pytest.raises(ValueError, match="只接受数字"):
        luhn_valid("6222 0000")


def test_find_pii_rules_and_priority():
    assert [s.kind for s in find_pii("13812345678@qq.com")] == ["email"]  # 长的赢
    assert [s.kind for s in find_pii("11010519491231002X")] == ["id_card"]
    assert find_pii("单号 12812345678 与 20230512123456789012 和 1999.00 元") == []  # 号段不对、太长、价格
    assert find_pii("编号 123456789") == []  # 没有 QQ 提示词
    assert find_pii("QQ：123456789") == [Span(3, 12, "qq", "123456789")]
    assert find_pii("电话：１３８１２３４５６７８") == [Span(3, 14, "phone", "１３８１２３４５６７８")]  # 全角数字
    assert [s.text for s in find_pii("卡号 4111 1111 1111 1111。")] == ["4111 1111 1111 1111"]


def _split_by_spans(text, spans):
    """片段之外的文字（len(spans)+1 段）。"""
    cuts = [0] + [i for s in spans for i in (s.start, s.end)] + [len(text)]
    return [text[cuts[i]:cuts[i + 1]] for i in range(0, len(cuts), 2)]


def test_masking_changes_nothing_outside_spans():
    tag_pattern = "|".join(re.escape(t) for t in TAGS.values())
    for example in make_pii_testset(600, seed=3) + make_pii_testset(200, seed=4, negative_share=0.8):
        text = example.text
        spans = find_pii(text)
        masked, counts = mask_pii(text)
        # 按标签切开遮盖后的文字，得到的正是原文按片段切开后片段之外的部分
        assert re.split(tag_pattern, masked) == _split_by_spans(text, spans)
        assert [m.group() for m in re.finditer(tag_pattern, masked)] == [TAGS[s.kind] for s in spans]
        assert sum(counts.values()) == len(spans)
        assert all(text[s.start:s.end] == s.text for s in spans)
        assert all(a.end <= b.start for a, b in zip(spans, spans[1:]))  # 不重叠、按位置
        assert find_pii(masked) == []  # 遮盖后再找，什么也没有


def test_scores_on_generated_set_and_score_function():
    examples = make_pii_testset(1500, seed=5)
    assert make_pii_testset(20, seed=5) == examples[:20]  # 同一个种子同样的句子
    gold = [e.spans for e in examples]
    assert all(e.text[s.start:s.end] == s.text for e in examples for s in e.spans)
    scores = pii_scores(gold, [find_pii(e.text) for e in examples])
    for kind in ("phone", "id_card", "bank_card", "email", "qq"):
        assert scores[kind]["support"] > 150
        assert scores[kind]["precision"] == 1.0 and scores[kind]["recall"] == 1.0, (kind, scores[kind])
    # 分数本身：一个漏报、一个类别错、一个误报，按定义数一遍
    g = [[Span(0, 11, "phone", "")], [Span(0, 5, "qq", ""), Span(6, 9, "email", "")]]
    p = [[], [Span(0, 5, "qq", ""), Span(6, 9, "phone", ""), Span(10, 12, "qq", "")]]
    s = pii_scores(g, p)
    assert s["phone"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert s["qq"]["precision"] == 0.5 and s["qq"]["recall"] == 1.0 and abs(s["qq"]["f1"] - 2 / 3) < 1e-12
    assert s["micro"]["precision"] == 1 / 3 and s["micro"]["recall"] == 1 / 3 and s["email"]["recall"] == 0.0


def random_spans(rng: random.Random, length: int) -> list[Span]:
    """一句话里随机的、互不重叠的片段（按位置排好）。"""
    spans, i = [], rng.randint(0, 3)
    while i < length:
        end = min(length, i + rng.randint(1, 4))
        spans.append(Span(i, end, rng.choice(KINDS), ""))
        i = end + rng.randint(0, 4)
    return spans


def noisy_prediction(rng: random.Random, gold: list[Span], length: int) -> list[Span]:
    """从标准片段改出预测：照抄、漏掉、换类别、挪终点，再在片段之间的空当里加误报；仍然互不重叠。"""
    pred, free_from = [], 0
    for span in gold + [Span(length, length, "", "")]:
        if span.start - free_from >= 2 and rng.random() < 0.3:  # 空当里的误报
            start = rng.randint(free_from, span.start - 1)
            pred.append(Span(start, rng.randint(start + 1, span.start), rng.choice(KINDS), ""))
        free_from = span.end
        if not span.kind:
            break
        roll = rng.random()
        if roll < 0.5:
            pred.append(span)
        elif roll < 0.65:
            pred.append(span._replace(kind=rng.choice([k for k in KINDS if k != span.kind])))
        elif roll < 0.8 and span.end - span.start > 1:
            pred.append(span._replace(end=span.end - 1))
    return pred


def test_pii_scores_against_seqeval():
    """打分与 seqeval 在字级 BIO 标签上算出的一样：逐类的 P/R/F1/support，以及微平均。"""
    from seqeval.metrics import classification_report

    def bio(spans, length):
        tags = ["O"] * length
        for s in spans:
            tags[s.start:s.end] = [f"B-{s.kind}"] + [f"I-{s.kind}"] * (s.end - s.start - 1)
        return tags

    rng = random.Random(0)
    for trial in range(200):
        lengths = [rng.randint(1, 30) for _ in range(rng.randint(1, 8))]
        gold = [random_spans(rng, n) for n in lengths]
        pred = [noisy_prediction(rng, g, n) for g, n in zip(gold, lengths)]
        ours = pii_scores(gold, pred)
        report = classification_report([bio(g, n) for g, n in zip(gold, lengths)],
                                       [bio(p, n) for p, n in zip(pred, lengths)], output_dict=True, zero_division=0)
        kinds = {s.kind for spans in gold + pred for s in spans}
        assert list(ours) == [k for k in TAGS if k in kinds] + ["micro"]  # 固定的顺序，不随集合的哈希变
        for kind in kinds:
            row = report.get(kind, {"precision": 0.0, "recall": 0.0, "f1-score": 0.0, "support": 0})
            assert ours[kind] == pytest.approx({"precision": row["precision"], "recall": row["recall"],
                                                "f1": row["f1-score"], "support": row["support"]}), (trial, kind)
        micro = report["micro avg"]
        assert ours["micro"] == pytest.approx({"precision": micro["precision"], "recall": micro["recall"],
                                               "f1": micro["f1-score"], "support": micro["support"]}), trial


def test_names_through_ner_model():
    from aigc_lib import pretrained

    ner = pretrained("ner")
    masked, counts = mask_pii("电话 13812345678，张伟 在北京工作。", names=True, ner=ner)
    assert masked == "电话 [手机号]，[姓名] 在[地名]工作。" and counts == {"phone": 1, "person": 1, "place": 1}


def test_cli_output_is_utf8_even_when_the_console_encoding_is_gbk(tmp_path):
    """Windows 上输出重定向到文件时，Python 默认按 GBK 写，emoji 写不进去、程序报错退出；aigc 一律写 UTF-8。"""
    import subprocess

    from _cli import cli_env

    source = tmp_path / "聊天记录.txt"
    source.write_text("好评👍 电话 13812345678\n", encoding="utf-8")
    result = subprocess.run([sys.executable, "-m", "aigc_lib.cli", "mask", str(source)], capture_output=True,
                            env=cli_env(PYTHONIOENCODING="gbk"), timeout=120)
    assert result.returncode == 0, result.stderr.decode("utf-8", "replace")
    assert result.stdout.decode("utf-8") == "好评👍 电话 [手机号]\n"
    assert "已遮盖" in result.stderr.decode("utf-8")


def test_cli_mask_file_stdin_and_errors(tmp_path, capsys, monkeypatch):
    import io
    import subprocess

    from _cli import cli_env

    from aigc_lib.cli import main

    text = "手机 13812345678，邮箱 a.b@example.com。\n身份证 11010519491231002X，订单 110105194912310021\n"
    path = tmp_path / "gbk.txt"
    path.write_bytes(text.encode("gbk"))
    done = run_aigc("mask", str(path))  # 端到端：真的起一个 aigc 进程
    assert done.returncode == 0, done.stderr
    assert done.stdout == mask_pii(text)[0]
    assert "手机号 1" in done.stderr and "身份证号 1" in done.stderr and "邮箱 1" in done.stderr and "共 3 处" in done.stderr
    monkeypatch.setattr(sys, "stdin", io.StringIO(text))
    assert main(["mask"]) == 0
    assert capsys.readouterr().out == done.stdout
    # 管道送进来的字节：GBK、UTF-16 与文件一样先识别编码（以前按 UTF-8 读，UTF-16 的手机号原样漏了出去）
    for encoding in ("gbk", "utf-16", "utf-8"):
        piped = subprocess.run([sys.executable, "-m", "aigc_lib.cli", "mask"], input=text.encode(encoding),
                               capture_output=True, env=cli_env(), timeout=120)
        assert piped.returncode == 0 and piped.stdout.decode("utf-8") == done.stdout, encoding
    binary = subprocess.run([sys.executable, "-m", "aigc_lib.cli", "mask"], input=bytes(range(256)) * 4,
                            capture_output=True, env=cli_env(), timeout=120)
    assert binary.returncode == 2 and binary.stdout == b"" and "二进制" in binary.stderr.decode("utf-8")
    assert main(["mask", str(tmp_path / "nope.txt")]) == 2
    err = capsys.readouterr().err
    assert "找不到文件" in err and "Traceback" not in err
    (tmp_path / "bin.dat").write_bytes(bytes(range(256)) * 4)
    assert main(["mask", str(tmp_path / "bin.dat")]) == 2
    assert "二进制" in capsys.readouterr().err
