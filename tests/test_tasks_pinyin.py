"""拼音 -> 汉字：语料（小句、注音、组批）、字准确率、两个经典基线（对照暴力枚举），以及 aigc 的 pinyin 任务端到端。"""

import itertools
import json
import math
import random
import re
from collections import Counter

import pytest
import torch

from aigc_lib import pretrained
from aigc_lib.cli import main
from aigc_lib.data.corpora import load_peoples_daily
from aigc_lib.tasks.pinyin.baselines import BigramHMM, MostFrequentChar
from aigc_lib.tasks.pinyin.data import (
    char_accuracy,
    clause_pairs,
    is_chinese,
    parse_pinyin,
    pinyin_pairs,
    pinyin_syllables,
    seq2seq_collate,
    split_clauses,
    split_syllables,
    to_pinyin,
)

# ---------------------------------------------------------------------------
# 语料
# ---------------------------------------------------------------------------


def test_pinyin_helpers():
    assert to_pinyin("我们爱北京") == ["wo", "men", "ai", "bei", "jing"]
    assert to_pinyin(["银行", "行长"]) == ["yin", "hang", "hang", "zhang"]  # 按词注音，多音字读对
    assert to_pinyin("绿") == ["lv"]  # ü 写成 v，与输入法一致
    assert parse_pinyin("  Wo men'ai  BEI jing ") == ["wo", "men", "ai", "bei", "jing"]
    with pytest.raises(ValueError, match="无法识别的音节"):
        parse_pinyin("wo3 men")
    assert is_chinese("中文") and not is_chinese("中文ａ") and not is_chinese("")


def test_parse_pinyin_rejects_letters_that_are_not_syllables():
    """只有小写字母还不够：每个音节都要是普通话里真有的，否则模型会"自信地"写出胡话。"""
    with pytest.raises(ValueError, match=re.escape("无法识别的音节 ['jjjjj', 'qqq']：普通话里没有这样的音节")) as info:
        parse_pinyin("jjjjj qqq")
    assert "要用空格" not in str(info.value)  # 切不成音节：不给加空格的建议
    with pytest.raises(ValueError, match=re.escape("['iphone']")):
        parse_pinyin("wo de iphone")
    with pytest.raises(ValueError, match=re.escape("['r']")):  # 儿化的 r 不单独成音节
        parse_pinyin("hua r")


@pytest.mark.parametrize("text, spaced", [("jintian", "jin tian"), ("woaibeijing", "wo ai bei jing"),
                                          ("wo aibeijing", "wo ai bei jing"), ("Jintian TIANQI hao", "jin tian tian qi hao"),
                                          ("fangan", "fang an")])
def test_run_together_pinyin_gets_a_spaced_suggestion(text, spaced):
    with pytest.raises(ValueError, match="无法识别的音节") as info:
        parse_pinyin(text)
    assert str(info.value).endswith(f"音节之间要用空格，例如：{spaced}")
    assert parse_pinyin(spaced) == spaced.split()  # 建议本身是合法输入


def test_split_syllables_finds_a_shortest_split():
    g = random.Random(0)
    known = sorted(pinyin_syllables())
    for _ in range(300):
        words = [g.choice(known) for _ in range(g.randint(1, 6))]
        split = split_syllables("".join(words))
        assert split is not None and "".join(split) == "".join(words) and len(split) <= len(words)
        assert all(s in pinyin_syllables() for s in split)
    assert split_syllables("jjjjj") is None and split_syllables("qqq") is None


def test_syllables_are_what_pypinyin_itself_writes_for_every_reading():
    """pinyin_syllables 直接读 pypinyin 的字典、自己去声调；对照 pypinyin 的公开接口：
    每个基本区汉字的每个读音（heteronym=True）按 Style.NORMAL 写出来，得到同一个集合。"""
    from pypinyin import Style, pinyin
    from pypinyin.pinyin_dict import pinyin_dict

    chars = "".join(chr(code) for code in range(0x4E00, 0xA000) if code in pinyin_dict)
    written = {r for readings in pinyin(chars, style=Style.NORMAL, heteronym=True) for r in readings}
    assert pinyin_syllables() == {r for r in written if r.isascii() and r.isalpha()}
    assert {"lv", "nve", "ng", "m"} <= pinyin_syllables() and len(pinyin_syllables()) > 400


def test_every_corpus_syllable_is_accepted():
    """语料（pypinyin 注音）里出现的每个音节、参考模型音节表里的每个音节，都是合法输入。"""
    corpus = {s for split in ("train", "val", "test") for syllables_, _ in pinyin_pairs(split) for s in syllables_}
    source_vocab = set(pretrained("pinyin").config["artifacts"]["src_vocab"]) - {"<pad>", "<unk>", "<bos>", "<eos>"}
    assert len(corpus) > 380 and corpus <= pinyin_syllables() and source_vocab <= pinyin_syllables()
    everything = sorted(pinyin_syllables())
    assert parse_pinyin(" ".join(everything)) == everything


def test_pretrained_predict_checks_syllables(capsys):
    """命令行和 pretrained(...).predict 都走同一个检查；真音节照常转换，音节表外的真音节仍按 <unk> 处理。"""
    from aigc_lib.tasks import TaskError

    assert main(["predict", "pretrained:pinyin", "jintian"]) == 2
    assert "音节之间要用空格，例如：jin tian" in capsys.readouterr().err
    assert main(["predict", "pretrained:pinyin", "jjjjj qqq"]) == 2
    assert "无法识别的音节 ['jjjjj', 'qqq']" in capsys.readouterr().err
    reference = pretrained("pinyin")
    with pytest.raises(TaskError, match=re.escape("例如：wo ai bei jing")):
        reference.predict(["woaibeijing"])
    with pytest.raises(TaskError, match=re.escape("第 2 句 'jintian'：拼音里有无法识别的音节")):  # 一个文件里的哪一句
        reference.predict(["ni hao", "jintian", "zai jian"])
    rows = reference.predict(["jin tian tian qi hen hao", "xi'an", "ei"])
    assert [len(row["hanzi"]) for row in rows] == [6, 2, 1]
    assert [row["unknown_syllables"] for row in rows] == [[], [], ["ei"]]  # ei 是真音节，只是训练集里没有


def random_sentence(g: random.Random):
    words = [("我们", "r"), ("爱", "v"), ("北京", "ns"), ("银行", "n"), ("行长", "n"), ("１９９８年", "t"),
             ("ＣＰＵ", "nx"), ("重庆", "ns"), ("，", "w"), ("。", "w"), ("、", "w"), ("长", "a")]
    return [g.choice(words) for _ in range(g.randint(0, 12))]


def test_clause_pairs_match_a_reference_built_from_the_joined_text():
    g = random.Random(0)
    for _ in range(200):
        sentences = [random_sentence(g) for _ in range(3)]
        lo, hi = g.randint(1, 3), g.randint(3, 9)
        # 参照：标点处换成 |，整段切开，再用正则挑出长度合适的纯汉字片段
        expected = []
        for s in sentences:
            joined = "".join("|" if tag == "w" else word for word, tag in s)
            expected += [p for p in joined.split("|") if re.fullmatch(r"[\u4e00-\u9fff]{%d,%d}" % (lo, hi), p)]
        pairs = clause_pairs(sentences, min_chars=lo, max_chars=hi)
        assert [text for _, text in pairs] == expected
        for syllables, text in pairs:
            assert len(syllables) == len(text) and all(re.fullmatch("[a-z]+", s) for s in syllables)
        limited = clause_pairs(sentences, min_chars=lo, max_chars=hi, limit=2)
        assert limited == pairs[:2]
        # unique：每个小句只留第一次；exclude：这些小句不要
        banned = set(expected[::3])
        kept = clause_pairs(sentences, min_chars=lo, max_chars=hi, unique=True, exclude=banned)
        assert [text for _, text in kept] == [t for t in dict.fromkeys(expected) if t not in banned]
    assert split_clauses([("，", "w")]) == []


def test_peoples_daily_pairs_are_aligned_and_limited():
    first = pinyin_pairs("test", limit=300)
    assert len(first) == 300 and pinyin_pairs("test", limit=100) == first[:100]
    for syllables, text in first:
        assert 2 <= len(text) <= 20 and is_chinese(text) and len(syllables) == len(text)
    assert Counter(s for syllables, _ in first for s in syllables)["de"] > 0  # "的"到处都是


def test_splits_share_no_clause_and_hold_no_repeats():
    """第 01 章的教训：测试集里的小句一个也不能在训练集（或验证集）里出现过，每份里也没有重复。"""
    splits = {split: [text for _, text in pinyin_pairs(split)] for split in ("train", "val", "test")}
    for texts in splits.values():
        assert len(texts) == len(set(texts)) > 1000
    # 与"所有小句"比：不限长度、不论能否注音，训练集里出现过的汉字串都不算新小句
    train_all = {"".join(words) for sentence in load_peoples_daily("train") for words in split_clauses(sentence)}
    raw_test = {"".join(words) for sentence in load_peoples_daily("test") for words in split_clauses(sentence)}
    assert len(raw_test & train_all) > 500  # 不去重时两边共有的小句（新闻套话）很多：这个测试能失败
    assert not train_all & set(splits["val"]) and not train_all & set(splits["test"])
    assert not set(splits["val"]) & set(splits["test"])


def test_seq2seq_collate_shifts_targets_and_pads():
    g = random.Random(1)
    for _ in range(50):
        batch = [([g.randrange(4, 50) for _ in range(g.randint(0, 7))], [g.randrange(4, 50) for _ in range(g.randint(0, 7))])
                 for _ in range(g.randint(1, 6))]
        src, src_lengths, tgt_in, tgt_out = seq2seq_collate(batch, pad_id=0, bos_id=2, eos_id=3)
        T = max(len(t) for _, t in batch) + 1
        assert tgt_in.shape == tgt_out.shape == (len(batch), T)
        for i, (s, t) in enumerate(batch):
            assert src[i, : len(s)].tolist() == s and src[i, len(s):].eq(0).all() and src_lengths[i] == len(s)
            assert tgt_in[i].tolist() == [2, *t] + [0] * (T - len(t) - 1)
            assert tgt_out[i].tolist() == [*t, 3] + [-100] * (T - len(t) - 1)


def test_char_accuracy_against_a_loop():
    g = random.Random(2)
    for _ in range(100):
        refs = ["".join(g.choice("甲乙丙") for _ in range(g.randint(0, 5))) for _ in range(g.randint(1, 5))]
        hyps = ["".join(g.choice("甲乙丙") for _ in range(g.randint(0, 5))) for _ in refs]
        correct = total = 0
        for r, h in zip(refs, hyps):
            for i in range(max(len(r), len(h))):
                total += 1
                correct += i < len(r) and i < len(h) and r[i] == h[i]
        if total == 0:
            with pytest.raises(ValueError):
                char_accuracy(refs, hyps)
        else:
            assert char_accuracy(refs, hyps) == pytest.approx(correct / total)
    assert char_accuracy(["我们"], ["我们"]) == 1.0
    with pytest.raises(ValueError, match="一一对应"):
        char_accuracy(["我"], [])


# ---------------------------------------------------------------------------
# 经典基线
# ---------------------------------------------------------------------------


def tiny_corpus(g: random.Random, n=30):
    """小语料：3 个音节，6 个字；有的字有两个读音（多音字），有的音有好几个字（同音字）。"""
    readings = {"甲": ["a"], "乙": ["a", "b"], "丙": ["b"], "丁": ["c"], "戊": ["c", "a"], "己": ["b"]}
    pairs = []
    for _ in range(n):
        text = "".join(g.choice(list(readings)) for _ in range(g.randint(1, 5)))
        pairs.append(([g.choice(readings[c]) for c in text], text))
    return pairs


def test_most_frequent_char_against_counting():
    g = random.Random(3)
    for _ in range(30):
        pairs = tiny_corpus(g)
        model = MostFrequentChar().fit(pairs)
        counts = {}
        for syllables, text in pairs:
            for s, c in zip(syllables, text):
                counts.setdefault(s, Counter())[c] += 1
        for syllable, counter in counts.items():
            top = max(counter.values())
            assert counter[model.predict([syllable])] == top
        assert len(model.predict(["a", "zzz", "c"])) == 3  # 没见过的音节也输出一个字


def reference_log_prob(pairs, k, syllables, text):
    """按公式直接数：log P(c, s) = Σ log P(c_t|c_{t-1}) + log P(s_t|c_t) + log P(</s>|c_n)。"""
    chars, bigrams, history, emissions = Counter(), Counter(), Counter(), Counter()
    for s, t in pairs:
        chars.update(t)
        emissions.update(zip(s, t))
        states = ["<s>", *t, "<s>"]
        bigrams.update(zip(states, states[1:]))
        history.update(states[:-1])
    V = len(chars) + 1
    total, prev = 0.0, "<s>"
    for s, c in zip(syllables, text):
        if emissions[(s, c)] == 0:
            return -math.inf
        total += math.log((bigrams[(prev, c)] + k) / (history[prev] + k * V)) + math.log(emissions[(s, c)] / chars[c])
        prev = c
    return total + math.log((bigrams[(prev, "<s>")] + k) / (history[prev] + k * V))


def test_hmm_log_prob_matches_the_formula_and_viterbi_matches_brute_force():
    g = random.Random(4)
    for trial in range(15):
        pairs = tiny_corpus(g)
        k = g.choice([0.01, 0.1, 1.0])
        hmm = BigramHMM(k=k).fit(pairs)
        for _ in range(6):
            syllables = [g.choice("abc") for _ in range(g.randint(1, 4))]
            # 暴力：所有 6^n 个字序列里联合概率最大的那一条
            scored = [(hmm.log_prob(syllables, "".join(seq)), "".join(seq))
                      for seq in itertools.product("甲乙丙丁戊己", repeat=len(syllables))]
            best_score = max(score for score, _ in scored)
            decoded = hmm.predict(syllables)
            assert hmm.log_prob(syllables, decoded) == pytest.approx(best_score, rel=1e-5)
            for score, text in g.sample(scored, 5):
                expected = reference_log_prob(pairs, k, syllables, text)
                assert score == pytest.approx(expected, rel=1e-5) if expected > -math.inf else score == -math.inf
    assert hmm.predict([]) == ""
    assert len(hmm.predict(["a", "unknown", "b"])) == 3


def test_hmm_prefers_the_context_that_the_corpus_supports():
    # "yi yuan" 单独出现时是"医院"，前面有"ren min"时语料里是"人民议员"：二元语法要能看上下文
    pairs = [(["yi", "yuan"], "医院")] * 8 + [(["yi"], "议")] * 3 + [(["ren", "min", "yi", "yuan"], "人民议员")] * 3
    hmm = BigramHMM(k=0.01).fit(pairs)
    assert hmm.predict(["yi", "yuan"]) == "医院"
    assert hmm.predict(["ren", "min", "yi", "yuan"]) == "人民议员"
    assert MostFrequentChar().fit(pairs).predict(["ren", "min", "yi", "yuan"]) == "人民医院"  # 不看上下文
    with pytest.raises(ValueError, match="音节数"):
        hmm.fit([(["a"], "甲乙")])


# ---------------------------------------------------------------------------
# aigc 的 pinyin 任务端到端
# ---------------------------------------------------------------------------

TINY = ["--epochs", "1", "--train-limit", "400", "--max-chars", "8", "--batch-size", "32", "--d-model", "16",
        "--num-heads", "2", "--num-layers", "1"]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "pinyin"
    assert main(["train", "--task", "pinyin", "--model", "seq2seq", "--out", str(out), "--quiet", *TINY]) == 0
    return out


def check_greedy_metrics(result: dict, pairs, task, model, config) -> None:
    """aigc evaluate 的数字，与从贪心解码的输出独立重算的一样：逐字比较、sacrebleu 的字级 BLEU、整句全对的比例。"""
    import sacrebleu

    from aigc_lib.tasks.pinyin import convert

    assert result["n"] == len(pairs) and result["decoding"] == "greedy"
    references = [text for _, text in pairs]
    hypotheses = convert(model, [s for s, _ in pairs], *task._vocabs(config))
    assert all(len(h) == len(r) for h, r in zip(hypotheses, references))
    correct = sum(h == r for hyp, ref in zip(hypotheses, references) for h, r in zip(hyp, ref))
    assert result["char_accuracy"] == pytest.approx(correct / sum(map(len, references)), abs=1e-12)
    expected_bleu = sacrebleu.corpus_bleu(hypotheses, [references], tokenize="char").score
    assert result["bleu"] == pytest.approx(expected_bleu, abs=1e-9)
    assert result["sentence_accuracy"] == pytest.approx(
        sum(h == r for h, r in zip(hypotheses, references)) / len(pairs), abs=1e-12)


def test_evaluate_pretrained_greedy_equals_recomputed(capsys):
    """smoke 小模型一句也对不上（整句准确率 0，比较成了 0 == 0）；参考模型贪心解码对上不少，同样独立重算。"""
    reference = pretrained("pinyin")
    assert main(["evaluate", "pretrained:pinyin", "--split", "val", "--limit", "40", "--decoding", "greedy",
                 "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert 0 < result["sentence_accuracy"] < 1 and 0 < result["char_accuracy"] < 1
    pairs = pinyin_pairs("val", max_chars=reference.config["sizes"]["max_chars"], limit=40)
    check_greedy_metrics(result, pairs, reference.task, reference.model, reference.config)


def test_train_evaluate_predict(trained_run, capsys):
    summary = json.loads((trained_run / "summary.json").read_text("utf-8"))
    assert summary["task"] == "pinyin" and summary["model"] == "seq2seq" and summary["sizes"]["max_chars"] == 8
    ckpt = torch.load(trained_run / "best.pt", weights_only=True)
    assert ckpt["config"]["artifacts"]["tgt_vocab"][:4] == ["<pad>", "<unk>", "<bos>", "<eos>"]

    assert main(["evaluate", str(trained_run), "--split", "val", "--json"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    from aigc_lib.tasks import load_run

    task, model, config = load_run(trained_run)
    check_greedy_metrics(json.loads(lines[0]), pinyin_pairs("val", max_chars=8), task, model, config)

    assert main(["predict", str(trained_run), "wo men ai bei jing", "zhong guo", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert [len(row["hanzi"]) for row in rows] == [5, 2]  # 一个音节一个字
    assert rows[0]["pinyin"] == "wo men ai bei jing"
    assert main(["predict", str(trained_run), "wo men"]) == 0
    assert re.fullmatch(r"\S{2}\two men", capsys.readouterr().out.strip())


def test_predict_agrees_with_evaluate_and_reports_bad_input(trained_run, capsys):
    from aigc_lib.tasks import load_run
    from aigc_lib.tasks.pinyin import convert

    task, model, config = load_run(trained_run)
    pairs = pinyin_pairs("val", max_chars=8, limit=40)
    rows = task.predict(model, config, [" ".join(s) for s, _ in pairs], torch.device("cpu"))
    vocabs = task._vocabs(config)
    assert [row["hanzi"] for row in rows] == convert(model, [s for s, _ in pairs], *vocabs)
    assert main(["predict", str(trained_run), "wo3 men"]) == 2
    assert "无法识别的音节" in capsys.readouterr().err
    assert main(["train", "--task", "pinyin", "--model", "gru", "--out", "x"]) == 2


def test_convert_writes_one_placeholder_per_unknown_character():
    """模型写出 <unk> 时，输出仍然一个音节一个字：否则后面的字全部错位，字准确率和 BLEU 都会算错。"""
    from aigc_lib.models import Seq2SeqTransformer
    from aigc_lib.tasks.pinyin import UNKNOWN_CHAR, build_vocabs, convert

    src_vocab, tgt_vocab = build_vocabs([(["bei", "jing"], "北京"), (["bei", "fang"], "北方")])
    model = Seq2SeqTransformer(len(src_vocab), len(tgt_vocab), d_model=8, num_heads=2, dim_feedforward=16,
                               pad_id=src_vocab.pad_id, bos_id=src_vocab.encode(["<bos>"])[0],
                               eos_id=src_vocab.encode(["<eos>"])[0])
    unk, bei = tgt_vocab.unk_id, tgt_vocab.encode(["北"])[0]
    written = [[unk, bei, unk], [bei, bei]]
    model.greedy_decode = lambda src, lengths, target_lengths: [written[i] for i in range(len(src))]
    out = convert(model, [["xx", "bei", "yy"], ["bei", "bei"]], src_vocab, tgt_vocab, batch_size=8)
    assert sorted(out) == sorted([f"{UNKNOWN_CHAR}北{UNKNOWN_CHAR}", "北北"])
    assert all(len(text) == n for text, n in zip(sorted(out, key=len), [2, 3]))
