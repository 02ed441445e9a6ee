"""浅融合解码：与穷举的最优解一致；λ = 0 时就是普通的束搜索 / 贪心；读音约束被遵守。"""

import itertools
import random
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from aigc_lib.data.text import Vocab
from aigc_lib.models import GPTLanguageModel, Seq2SeqTransformer
from aigc_lib.tasks.pinyin import convert
from aigc_lib.tasks.pinyin.fusion import LM_CONTEXT, allowed_mask, fused_convert, syllable_lexicon

SYLLABLES = ["shi", "wo", "men", "ai"]
CHARS = ["是", "市", "我", "们", "门", "爱"]


def tiny_models(seed: int):
    """随机初始化的小 seq2seq 和字级 GPT；GPT 的字表与目标字表顺序不同，还少一个字（测 <unk> 的映射）。"""
    torch.manual_seed(seed)
    src_vocab = Vocab.from_itos(["<pad>", "<unk>", "<bos>", "<eos>"] + SYLLABLES)
    tgt_vocab = Vocab.from_itos(["<pad>", "<unk>", "<bos>", "<eos>"] + CHARS)
    lm_vocab = Vocab.from_itos(["<pad>", "<unk>", LM_CONTEXT] + CHARS[::-1][:-1])
    model = Seq2SeqTransformer(len(src_vocab), len(tgt_vocab), d_model=16, num_heads=2, dim_feedforward=32,
                               num_encoder_layers=1, num_decoder_layers=1, dropout=0.0).eval()
    lm = GPTLanguageModel(len(lm_vocab), d_model=16, num_heads=2, num_layers=1, dim_feedforward=32,
                          dropout=0.0, context_len=16).eval()
    with torch.no_grad():  # 让两个模型的输出分布更尖一些（语言模型更尖），融合才会改变结果
        for p in model.parameters():
            p.mul_(2.0)
        for p in lm.parameters():
            p.mul_(4.0)
    return model, lm, src_vocab, tgt_vocab, lm_vocab


def fused_score_by_brute_force(model, lm, src_vocab, tgt_vocab, lm_vocab, syllables, ids, weight):
    """log P_seq2seq(ids, <eos> | 拼音) + λ Σ_t log P_LM(c_t | ，c_<t)，逐项直接算（字表外的字 -> LM 的 <unk>）。"""
    src = torch.tensor([src_vocab.encode(syllables)])
    total = model.sequence_log_prob(src, torch.tensor([len(syllables)]), [list(ids)]).item()
    lm_ids = [lm_vocab[LM_CONTEXT]] + [lm_vocab.stoi.get(tgt_vocab.itos[i], lm_vocab.unk_id) for i in ids]
    with torch.no_grad():
        log_p = F.log_softmax(lm(torch.tensor([lm_ids[:-1]])), dim=-1)[0]  # (T, V_lm)
    return total + weight * sum(log_p[t, lm_ids[t + 1]].item() for t in range(len(ids)))


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("weight", [0.0, 0.5, 2.0])
def test_a_wide_beam_finds_the_best_fused_sequence_by_brute_force(seed, weight):
    model, lm, src_vocab, tgt_vocab, lm_vocab = tiny_models(seed)
    rng = random.Random(seed)
    syllables = [rng.choice(SYLLABLES) for _ in range(3)]
    # 穷举全部 7³ 个编号序列（6 个字和 <unk>；<pad>、<bos>、<eos> 在中间不许写）
    candidates = list(itertools.product([tgt_vocab.unk_id] + tgt_vocab.encode(CHARS), repeat=3))
    scores = {"".join("□" if i == tgt_vocab.unk_id else tgt_vocab.itos[i] for i in c):
              fused_score_by_brute_force(model, lm, src_vocab, tgt_vocab, lm_vocab, syllables, c, weight)
              for c in candidates}
    best = max(scores, key=scores.get)
    # 束宽大于候选的个数：束搜索不会丢掉任何候选，找到的就是最优解
    got = fused_convert(model, [syllables], src_vocab, tgt_vocab, lm, lm_vocab, weight=weight, beam_size=400)[0]
    assert got == best or scores[got] == pytest.approx(scores[best], abs=1e-5), (got, best)


def test_the_language_model_changes_some_answers():
    """上面的穷举对照要有意义，融合就得真的改变结果：6 个种子里至少有一个，λ = 2 的最优解与 λ = 0 的不同。"""
    changed = 0
    for seed in range(6):
        model, lm, src_vocab, tgt_vocab, lm_vocab = tiny_models(seed)
        rng = random.Random(seed)
        syllables = [rng.choice(SYLLABLES) for _ in range(3)]
        plain, fused = (fused_convert(model, [syllables], src_vocab, tgt_vocab, lm, lm_vocab, weight=w, beam_size=400)[0]
                        for w in (0.0, 2.0))
        changed += plain != fused
    assert changed >= 1


@pytest.mark.parametrize("seed", range(3))
def test_weight_zero_is_plain_decoding(seed):
    model, lm, src_vocab, tgt_vocab, lm_vocab = tiny_models(seed)
    rng = random.Random(seed)
    batch = [[rng.choice(SYLLABLES) for _ in range(rng.randint(1, 5))] for _ in range(12)]
    greedy = convert(model, batch, src_vocab, tgt_vocab)
    assert fused_convert(model, batch, src_vocab, tgt_vocab, lm, lm_vocab, weight=0.0, beam_size=1) == greedy
    beam = convert(model, batch, src_vocab, tgt_vocab, beam_size=3)
    assert fused_convert(model, batch, src_vocab, tgt_vocab, lm, lm_vocab, weight=0.0, beam_size=3) == beam


def test_the_lexicon_is_obeyed_and_lengths_match():
    model, lm, src_vocab, tgt_vocab, lm_vocab = tiny_models(0)
    pairs = [(["shi"], "是"), (["shi"], "市"), (["wo", "men"], "我们"), (["men"], "门"), (["ai"], "爱")]
    lexicon = syllable_lexicon(pairs, tgt_vocab)
    assert lexicon == {"ai": [tgt_vocab["爱"]], "men": sorted([tgt_vocab["们"], tgt_vocab["门"]]),
                       "shi": sorted([tgt_vocab["是"], tgt_vocab["市"]]), "wo": [tgt_vocab["我"]]}
    rng = random.Random(1)
    batch = [[rng.choice(SYLLABLES) for _ in range(rng.randint(1, 6))] for _ in range(20)]
    for weight in (0.0, 1.0):
        outputs = fused_convert(model, batch, src_vocab, tgt_vocab, lm, lm_vocab, weight=weight, beam_size=4,
                                lexicon=lexicon, batch_size=7)
        for syllables, text in zip(batch, outputs):
            assert len(text) == len(syllables)
            assert all(tgt_vocab[c] in lexicon[s] for s, c in zip(syllables, text))
    model.train(), lm.train()  # 解码时切到 eval，结束后恢复调用者的模式
    assert fused_convert(model, batch, src_vocab, tgt_vocab, lm, lm_vocab, weight=1.0, lexicon=lexicon) == outputs
    assert model.training and lm.training
    mask = allowed_mask([["shi", "zzz"]], lexicon, len(tgt_vocab))
    assert mask[0, 0].sum() == 2 and bool(mask[0, 1].all())  # 不认识的音节不限制
    with pytest.raises(ValueError, match="不能是负数"):
        fused_convert(model, batch, src_vocab, tgt_vocab, lm, lm_vocab, weight=-1.0)


# ---------------------------------------------------------------------------
# config 里记着浅融合设置时（模型库的参考模型），评估和预测按它解码
# ---------------------------------------------------------------------------


def fake_zoo_lm(lm, lm_vocab, sha="abc"):
    """模型库读回的语言模型只用到这三样：模型、词表、来历里权重的 sha256。"""
    return SimpleNamespace(model=lm, vocab=lm_vocab, provenance={"weights": {"sha256": sha}})


def tiny_config(src_vocab, tgt_vocab, decoding=None) -> dict:
    config = {"task": "pinyin", "model": "seq2seq", "sizes": {"max_chars": 6, "train_limit": 0},
              "artifacts": {"src_vocab": list(src_vocab.itos), "tgt_vocab": list(tgt_vocab.itos), "max_chars": 6}}
    return config if decoding is None else {**config, "decoding": decoding}


def test_predict_follows_the_decoding_recorded_in_the_config(monkeypatch):
    from aigc_lib.tasks.pinyin import PinyinTask
    from aigc_lib.tasks.pinyin import task as pinyin_task

    model, lm, src_vocab, tgt_vocab, lm_vocab = tiny_models(0)
    lexicon = syllable_lexicon([(["shi"], "市"), (["wo", "men"], "我门"), (["ai"], "爱")], tgt_vocab)
    spec = {"lm": "tiny-lm", "lm_sha256": "abc", "lm_weight": 2.0, "beam_size": 3, "lexicon": lexicon}
    asked = []
    monkeypatch.setattr(pinyin_task, "load_pretrained", lambda name, device=None: asked.append(name) or
                        fake_zoo_lm(lm, lm_vocab))
    rng = random.Random(0)
    batch = [[rng.choice(SYLLABLES) for _ in range(rng.randint(1, 5))] for _ in range(20)]
    task, texts = PinyinTask(), [" ".join(s) for s in batch]

    fused = [row["hanzi"] for row in task.predict(model, tiny_config(src_vocab, tgt_vocab, spec), texts, "cpu")]
    assert fused == fused_convert(model, batch, src_vocab, tgt_vocab, lm, lm_vocab, weight=2.0, beam_size=3,
                                  lexicon=lexicon)
    assert asked and set(asked) == {"tiny-lm"}
    plain = [row["hanzi"] for row in task.predict(model, tiny_config(src_vocab, tgt_vocab), texts, "cpu")]
    assert plain == convert(model, batch, src_vocab, tgt_vocab)
    assert plain != fused  # 读音表只允许"市""我""门""爱"：融合的输出不可能与贪心处处相同
    assert task.decoding(tiny_config(src_vocab, tgt_vocab)) == {"decoding": "greedy"}
    assert task.decoding(tiny_config(src_vocab, tgt_vocab, spec)) == {"decoding": "fusion", "lm": "tiny-lm",
                                                                      "lm_weight": 2.0, "beam_size": 3}


def test_a_different_language_model_than_the_one_tuned_with_is_a_clear_error(monkeypatch):
    from aigc_lib.tasks import TaskError
    from aigc_lib.tasks.pinyin import PinyinTask
    from aigc_lib.tasks.pinyin import task as pinyin_task

    model, lm, src_vocab, tgt_vocab, lm_vocab = tiny_models(0)
    spec = {"lm": "tiny-lm", "lm_sha256": "abc", "lm_weight": 1.0, "beam_size": 2, "lexicon": {}}
    monkeypatch.setattr(pinyin_task, "load_pretrained", lambda name, device=None: fake_zoo_lm(lm, lm_vocab, "def"))
    with pytest.raises(TaskError, match="另一个版本的 tiny-lm.*train_reference.py --export-only --only pinyin"):
        PinyinTask().predict(model, tiny_config(src_vocab, tgt_vocab, spec), ["shi wo"], "cpu")


def test_tune_fusion_picks_the_best_weight_on_validation_clauses_only(monkeypatch):
    from aigc_lib.tasks.pinyin import fusion

    model, lm, src_vocab, tgt_vocab, lm_vocab = tiny_models(1)
    rng = random.Random(3)
    reading = {"是": "shi", "市": "shi", "我": "wo", "们": "men", "门": "men", "爱": "ai"}

    def clauses(n):
        texts = ["".join(rng.choice(CHARS) for _ in range(rng.randint(2, 5))) for _ in range(n)]
        return [([reading[c] for c in t], t) for t in texts]

    data = {"train": clauses(30), "val": clauses(40), "test": [(["ai"], "爱")] * 5}
    seen = []
    monkeypatch.setattr(fusion, "pinyin_pairs", lambda split, max_chars, limit=None: seen.append(split) or data[split])
    weights = (0.0, 0.5, 2.0, 4.0)
    spec = fusion.tune_fusion(model, tiny_config(src_vocab, tgt_vocab), fake_zoo_lm(lm, lm_vocab), "tiny-lm",
                              weights=weights, beam_size=3, val_clauses=25)
    assert sorted(seen) == ["train", "val"]  # 测试集一个字也不看
    lexicon = syllable_lexicon(data["train"], tgt_vocab)
    grid = fusion.fusion_grid(model, data["val"][:25], src_vocab, tgt_vocab, lm, lm_vocab, weights, 3, lexicon)
    assert spec["val_grid"] == {str(w): acc for w, acc in grid.items()} and len(set(grid.values())) > 1
    assert spec["lm_weight"] == max(grid, key=grid.get) and spec["lexicon"] == lexicon
    assert (spec["lm"], spec["lm_sha256"], spec["beam_size"], spec["val_clauses"]) == ("tiny-lm", "abc", 3, 25)


@pytest.mark.parametrize("terminal", [True, False])
def test_decoding_shows_a_progress_bar_only_in_a_terminal(monkeypatch, terminal):
    import io
    import sys

    class Stderr(io.StringIO):
        def isatty(self):
            return terminal

    monkeypatch.setenv("AIGC_PROGRESS", "text")
    monkeypatch.setattr(sys, "stderr", Stderr())
    model, _, src_vocab, tgt_vocab, _ = tiny_models(0)
    batch = [["shi", "wo"], ["ai"], ["men", "shi", "ai"]]
    assert convert(model, batch, src_vocab, tgt_vocab, batch_size=1) == convert(model, batch, src_vocab, tgt_vocab)
    assert ("解码" in sys.stderr.getvalue()) == terminal
