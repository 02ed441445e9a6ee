"""浅融合解码：与穷举的最优解一致；λ = 0 时就是普通的束搜索 / 贪心；读音约束被遵守。"""

import itertools
import random

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
    mask = allowed_mask([["shi", "zzz"]], lexicon, len(tgt_vocab))
    assert mask[0, 0].sum() == 2 and bool(mask[0, 1].all())  # 不认识的音节不限制
    with pytest.raises(ValueError, match="不能是负数"):
        fused_convert(model, batch, src_vocab, tgt_vocab, lm, lm_vocab, weight=-1.0)
