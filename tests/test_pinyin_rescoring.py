"""词二元语法（第三个经典基线）与三个模型一起重打分：概率归一、Viterbi 与穷举一致、候选的得分与逐项计算一致。"""

import itertools
import math
import random

import pytest

from aigc_lib.tasks.pinyin import WordBigram, fused_convert, rescoring_candidates, rescored_convert, syllable_lexicon
from aigc_lib.tasks.pinyin.rescoring import fused_log_prob, pick_best
from aigc_lib.tasks.pinyin.word_bigram import BOS, EOS

from test_pinyin_fusion import CHARS, SYLLABLES, fake_zoo_lm, tiny_config, tiny_models

READING = {"是": "shi", "市": "shi", "我": "wo", "们": "men", "门": "men", "爱": "ai"}
WORDS = ["我们", "是", "市", "爱", "门", "我", "们", "市门", "爱我"]


def random_clauses(seed: int, n: int = 60) -> list[list[str]]:
    rng = random.Random(seed)
    return [[rng.choice(WORDS) for _ in range(rng.randint(1, 4))] for _ in range(n)]


def segmentations(n: int):
    """长度为 n 的串的全部切分（每个切分是一串 (i, j)）。"""
    for cuts in itertools.product([False, True], repeat=n - 1):
        bounds = [0] + [i + 1 for i, cut in enumerate(cuts) if cut] + [n]
        yield list(zip(bounds, bounds[1:]))


@pytest.mark.parametrize("seed", range(4))
def test_witten_bell_probabilities_sum_to_one_after_every_context(seed):
    lm = WordBigram().fit(random_clauses(seed))
    vocab = list(lm.unigram)  # 含句末 </s>
    for previous in [BOS, *vocab, "没见过的词"]:
        assert sum(lm.prob(w, previous) for w in vocab) == pytest.approx(1.0, abs=1e-9)
    clause = random_clauses(seed + 10, 1)[0]
    sequence = [BOS, *clause, EOS]
    assert lm.log_prob(clause) == pytest.approx(sum(math.log(lm.prob(w, v)) for v, w in zip(sequence, sequence[1:])))


@pytest.mark.parametrize("seed", range(4))
def test_score_is_the_best_segmentation_by_brute_force(seed):
    lm = WordBigram(max_word_len=3).fit(random_clauses(seed))
    rng = random.Random(seed)
    for _ in range(20):
        text = "".join(rng.choice(CHARS) for _ in range(rng.randint(1, 6)))
        best = max(lm.log_prob([text[i:j] for i, j in cut]) for cut in segmentations(len(text))
                   if all(j - i == 1 or (j - i <= 3 and text[i:j] in lm.unigram) for i, j in cut))
        assert lm.score(text) == pytest.approx(best)


@pytest.mark.parametrize("seed", range(4))
def test_lattice_viterbi_with_a_wide_beam_matches_brute_force(seed):
    lm = WordBigram(beam=10_000).fit(random_clauses(seed))
    rng = random.Random(seed + 100)
    for _ in range(10):
        syllables = [rng.choice(SYLLABLES) for _ in range(rng.randint(1, 5))]
        # 穷举：每个位置的字都读对了的全部字串，各自取最好的切分
        options = [[c for c in CHARS if READING[c] == s] for s in syllables]
        scores = {"".join(chars): lm.score("".join(chars)) for chars in itertools.product(*options)}
        found = lm.kbest(syllables, k=len(scores) + 5)
        assert sorted(text for _, text in found) == sorted(scores)
        for value, text in found:
            assert value == pytest.approx(scores[text])
        assert [v for v, _ in found] == sorted((v for v, _ in found), reverse=True)
        assert lm.predict(syllables) == found[0][1] and len(found[0][1]) == len(syllables)


def test_word_bigram_edge_cases_and_errors():
    lm = WordBigram().fit([["我们", "爱", "北京"], ["我们", "是", "学生"], ["握", "手"]])
    assert lm.predict(["wo", "men", "ai", "bei", "jing"]) == "我们爱北京"
    assert lm.predict(["wo", "zzz", "shou"]) == "握□手"  # 没见过的音节写 □；"握"单独成过词，"我"没有
    assert lm.predict([]) == "" and lm.kbest(["wo"], 5)[0][1] in {"我", "握"}
    assert ("bei", "jing") in lm.words_by_reading and "北" in lm.words_by_reading[("bei",)]  # 词里拆出的单字
    with pytest.raises(ValueError, match="训练数据是空的"):
        WordBigram().fit([[], []])
    with pytest.raises(ValueError, match=">= 1"):
        WordBigram(beam=0)
    with pytest.raises(ValueError, match="非空"):
        lm.score("")


# ---------------------------------------------------------------------------
# 重打分：束里的候选 + 词网格的候选，三项得分相加
# ---------------------------------------------------------------------------


def setup(seed: int):
    model, lm, src_vocab, tgt_vocab, lm_vocab = tiny_models(seed)
    word_bigram = WordBigram().fit(random_clauses(seed))
    rng = random.Random(seed)
    batch = [[rng.choice(SYLLABLES) for _ in range(rng.randint(1, 5))] for _ in range(15)]
    lexicon = syllable_lexicon([([READING[c] for c in w], w) for w in WORDS], tgt_vocab)
    return model, lm, src_vocab, tgt_vocab, lm_vocab, word_bigram, batch, lexicon


@pytest.mark.parametrize("seed", range(3))
def test_candidates_carry_the_fused_and_word_scores_computed_term_by_term(seed):
    model, lm, src_vocab, tgt_vocab, lm_vocab, word_bigram, batch, lexicon = setup(seed)
    beams = fused_convert(model, batch, src_vocab, tgt_vocab, lm, lm_vocab, weight=0.7, beam_size=3, lexicon=lexicon,
                          nbest=True)
    best = fused_convert(model, batch, src_vocab, tgt_vocab, lm, lm_vocab, weight=0.7, beam_size=3, lexicon=lexicon)
    candidates = rescoring_candidates(model, batch, src_vocab, tgt_vocab, lm, lm_vocab, word_bigram, 0.7, 3, lexicon,
                                      kbest=4)
    lattices = [word_bigram.kbest(s, 4) for s in batch]  # 先各自解码、再重打分（第 10 章这样用），结果相同
    assert rescoring_candidates(model, batch, src_vocab, tgt_vocab, lm, lm_vocab, word_bigram, 0.7, 3, lexicon,
                                beams=beams, lattices=lattices) == candidates
    with pytest.raises(ValueError, match="一一对应"):
        rescoring_candidates(model, batch, src_vocab, tgt_vocab, lm, lm_vocab, word_bigram, 0.7, 3, lexicon,
                             beams=beams[:-1])
    for syllables, beam, top, found in zip(batch, beams, best, candidates):
        assert beam[0][1] == top  # n-best 的第一个就是普通的浅融合结果
        texts = [text for text, _, _ in found]
        assert texts[: len(beam)] == [text for _, text in beam]  # 束里的在前，顺序不变
        assert set(texts) == {text for _, text in beam} | {text for _, text in word_bigram.kbest(syllables, 4)}
        # 每个候选的浅融合总分 = 老师强制逐项算的总分（束里的来自束搜索，网格来的来自 fused_log_prob）
        again = fused_log_prob(model, lm, [syllables] * len(texts), texts, src_vocab, tgt_vocab, lm_vocab, 0.7)
        for (text, fused, word), value in zip(found, again):
            assert fused == pytest.approx(value, abs=1e-4) and word == pytest.approx(word_bigram.score(text))
            assert len(text) == len(syllables)


@pytest.mark.parametrize("seed", range(3))
def test_the_word_weight_moves_the_choice_from_the_networks_to_the_word_bigram(seed):
    model, lm, src_vocab, tgt_vocab, lm_vocab, word_bigram, batch, lexicon = setup(seed)
    candidates = rescoring_candidates(model, batch, src_vocab, tgt_vocab, lm, lm_vocab, word_bigram, 0.7, 3, lexicon)
    for mu in (0.0, 0.5, 3.0):
        chosen = pick_best(candidates, mu)
        assert chosen == rescored_convert(model, batch, src_vocab, tgt_vocab, lm, lm_vocab, word_bigram, weight=0.7,
                                          word_weight=mu, beam_size=3, lexicon=lexicon)
        for text, found in zip(chosen, candidates):
            assert max(f + mu * w for _, f, w in found) == f_plus(found, text, mu)
    networks, words = pick_best(candidates, 0.0), pick_best(candidates, 1e6)
    assert networks != words  # 这组数据上两种极端确实选得不同，上面的对照才有意义
    for found, text in zip(candidates, words):
        assert word_score(found, text) == max(w for _, _, w in found)
    with pytest.raises(ValueError, match="不能是负数"):
        rescored_convert(model, batch, src_vocab, tgt_vocab, lm, lm_vocab, word_bigram, word_weight=-1.0)


def f_plus(found, text, mu):
    return next(f + mu * w for t, f, w in found if t == text)


def word_score(found, text):
    return next(w for t, _, w in found if t == text)


def test_the_task_rescores_when_the_config_says_so_and_checks_the_word_bigram(monkeypatch):
    from aigc_lib.tasks import TaskError
    from aigc_lib.tasks.pinyin import PinyinTask
    from aigc_lib.tasks.pinyin import task as pinyin_task
    from aigc_lib.tasks.pinyin.rescoring import word_bigram_fingerprint

    model, lm, src_vocab, tgt_vocab, lm_vocab, word_bigram, batch, lexicon = setup(0)
    monkeypatch.setattr(pinyin_task, "load_pretrained", lambda name, device=None: fake_zoo_lm(lm, lm_vocab))
    monkeypatch.setattr(pinyin_task, "train_word_bigram", lambda: word_bigram)
    spec = {"lm": "tiny-lm", "lm_sha256": "abc", "lm_weight": 0.7, "beam_size": 3, "lexicon": lexicon,
            "word_weight": 2.0, "word_kbest": 4, "word_bigram": word_bigram_fingerprint(word_bigram)}
    task, texts = PinyinTask(), [" ".join(s) for s in batch]
    got = [row["hanzi"] for row in task.predict(model, tiny_config(src_vocab, tgt_vocab, spec), texts, "cpu")]
    assert got == rescored_convert(model, batch, src_vocab, tgt_vocab, lm, lm_vocab, word_bigram, weight=0.7,
                                   word_weight=2.0, beam_size=3, lexicon=lexicon, kbest=4)
    assert task.decoding(tiny_config(src_vocab, tgt_vocab, spec)) == {
        "decoding": "rescoring", "lm": "tiny-lm", "lm_weight": 0.7, "beam_size": 3, "word_weight": 2.0, "word_kbest": 4}
    stale = {**spec, "word_bigram": {"words": 1, "tokens": 2}}
    with pytest.raises(TaskError, match="另一份训练语料.*--export-only --only pinyin"):
        task.predict(model, tiny_config(src_vocab, tgt_vocab, stale), texts[:1], "cpu")


def test_tune_rescoring_picks_the_best_word_weight_on_validation_clauses_only(monkeypatch):
    from aigc_lib.tasks.pinyin import rescoring

    model, lm, src_vocab, tgt_vocab, lm_vocab, word_bigram, _, lexicon = setup(1)
    rng = random.Random(5)
    texts = ["".join(rng.choice(WORDS) for _ in range(rng.randint(1, 3))) for _ in range(40)]
    data = {"val": [([READING[c] for c in t], t) for t in texts], "test": [(["ai"], "爱")] * 5}
    seen = []
    monkeypatch.setattr(rescoring, "pinyin_pairs", lambda split, max_chars: seen.append(split) or data[split])
    monkeypatch.setattr(rescoring, "train_word_bigram", lambda: word_bigram)
    fusion = {"lm": "tiny-lm", "lm_weight": 0.7, "beam_size": 3, "lexicon": lexicon, "val_clauses": 30}
    weights = (0.0, 0.5, 2.0, 50.0)
    spec = rescoring.tune_rescoring(model, tiny_config(src_vocab, tgt_vocab), fake_zoo_lm(lm, lm_vocab), fusion,
                                    word_weights=weights, kbest=3)
    assert seen == ["val"]  # 测试集一个字也不看
    grid = rescoring.rescoring_grid(model, data["val"][:30], src_vocab, tgt_vocab, lm, lm_vocab, word_bigram, 0.7,
                                    weights, 3, lexicon, 3)
    assert spec["word_grid"] == {str(mu): acc for mu, acc in grid.items()} and len(set(grid.values())) > 1
    assert spec["word_weight"] == max(grid, key=grid.get) and spec["word_kbest"] == 3
    assert spec["word_bigram"] == {"words": word_bigram.vocab_size, "tokens": word_bigram.total}
    assert {k: spec[k] for k in fusion} == fusion  # 浅融合的设置原样保留
    assert set(spec) - set(fusion) == set(rescoring.RESCORING_KEYS)  # with_decoding("fusion") 去掉的正是这几项


def test_with_decoding_steps_down_from_what_the_config_records():
    from aigc_lib.tasks import TaskError
    from aigc_lib.tasks.pinyin import PinyinTask
    from aigc_lib.tasks.sentiment import SentimentTask

    _, _, src_vocab, tgt_vocab, _ = tiny_models(0)
    fusion = {"lm": "tiny-lm", "lm_sha256": "abc", "lm_weight": 0.7, "beam_size": 3, "lexicon": {}}
    full = {**fusion, "word_weight": 1.0, "word_kbest": 4, "word_grid": {}, "word_bigram": {"words": 1, "tokens": 2}}
    task = PinyinTask()
    config = tiny_config(src_vocab, tgt_vocab, full)
    assert task.with_decoding(config, "rescoring") == config
    assert task.with_decoding(config, "fusion")["decoding"] == fusion
    assert task.decoding(task.with_decoding(config, "fusion"))["decoding"] == "fusion"
    assert task.decoding(task.with_decoding(config, "greedy")) == {"decoding": "greedy"}
    assert config["decoding"] == full  # 原 config 不动
    with pytest.raises(TaskError, match="只记着 fusion.*没法用 rescoring"):
        task.with_decoding(tiny_config(src_vocab, tgt_vocab, fusion), "rescoring")
    with pytest.raises(TaskError, match="只记着 greedy.*没法用 fusion"):
        task.with_decoding(tiny_config(src_vocab, tgt_vocab), "fusion")
    with pytest.raises(TaskError, match="只能是 greedy \\| fusion \\| rescoring"):
        task.with_decoding(config, "beam")
    with pytest.raises(TaskError, match="只用于拼音模型"):
        SentimentTask().with_decoding({}, "greedy")
