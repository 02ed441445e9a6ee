"""重打分（n-best rescoring）：把 seq2seq、字级 GPT 和词二元语法三个模型的判断加在一起。

浅融合（``fusion.py``）在束搜索的每一步把 seq2seq 和 GPT 的对数概率相加；词二元语法（``word_bigram.py``）
按**词**打分，没法逐字插进束搜索（写到一半的词还不知道是哪个词）。做法是先各自出候选、再一起打分：

1. 候选：浅融合束搜索留下的 ``beam_size`` 句，加上词网格 Viterbi 的前 ``kbest`` 句（两者常有重复，去掉）；
2. 每个候选 y 的总分::

       log p_seq2seq(y | 拼音) + λ · log p_GPT(y)  +  μ · log p_词二元(y)

   前两项就是浅融合的得分（束里的候选直接沿用，网格来的候选用"老师强制"一次算完），第三项是
   :meth:`~aigc_lib.tasks.pinyin.word_bigram.WordBigram.score`；
3. 取总分最高的。μ（``word_weight``）在验证集上挑，λ 沿用浅融合挑好的那个。

两个模型的候选互相补充：神经网络擅长看整句的上下文，词二元语法记得训练里见过的每一个词（人名、地名、
成语）。μ = 0 时只在候选里多了几句，结果与浅融合相同（除非网格来的候选神经网络打分更高）。

    ime = WordBigram().fit(word_clauses("train"))
    rescored_convert(seq2seq, syllable_lists, src_vocab, tgt_vocab, gpt.model, gpt.vocab, ime,
                     weight=0.8, word_weight=1.0, beam_size=4, lexicon=lexicon)
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from ...core.runtime import eval_mode
from ...data.batching import pad_batch
from ...data.text import Vocab
from ...models.layers import length_mask
from ...models.seq2seq import Seq2SeqTransformer
from .data import char_accuracy, pinyin_pairs, word_clauses
from .fusion import LM_CONTEXT, fused_convert
from .word_bigram import WordBigram

WORD_WEIGHTS = (0.0, 0.5, 1.0, 1.5, 2.0)  # μ 的候选值（0 = 不用词二元语法打分）
RESCORING_KEYS = ("word_weight", "word_kbest", "word_grid", "word_bigram")  # tune_rescoring 在浅融合的设置上加的几项


@torch.inference_mode()
def fused_log_prob(model: Seq2SeqTransformer, lm, syllable_lists, texts, src_vocab: Vocab, tgt_vocab: Vocab,
                   lm_vocab: Vocab, weight: float, batch_size: int = 512) -> list[float]:
    """"老师强制"算每对 (音节列表, 汉字串) 的浅融合总分 :math:`\\log p_\\text{seq2seq}(y, \\langle eos\\rangle \\mid s)
    + λ \\sum_t \\log p_\\text{LM}(y_t \\mid \\text{，} y_{<t})`，与 ``fused_convert(..., nbest=True)`` 给束里候选的总分
    算法相同（读音约束只删候选、不改概率，这里不需要它）。

    只有一处不同：束里的候选只含 ``tgt_vocab`` 里的字，而词网格给的候选可能有 ``tgt_vocab`` 之外的字。
    这样的字，seq2seq 一项按 ``<unk>`` 打分（它写不出这个字），语言模型一项按这个字本身打分（``lm_vocab``
    里也没有时才按 ``<unk>``）。"""
    device = next(model.parameters()).device
    context_id = lm_vocab.stoi.get(LM_CONTEXT, lm_vocab.unk_id)
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # 长度相近的放一批，少补齐
    scores = [0.0] * len(texts)
    with eval_mode(model), eval_mode(lm):
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            src, lengths = pad_batch([src_vocab.encode(syllable_lists[i]) for i in chunk], pad_id=model.pad_id)
            seq2seq = model.sequence_log_prob(src.to(device), lengths.to(device),
                                              [tgt_vocab.encode(list(texts[i])) for i in chunk])
            # 语言模型读"，"加上候选：位置 t 的输出预测第 t+1 个字
            tokens, token_lengths = pad_batch([[context_id] + [lm_vocab.stoi.get(c, lm_vocab.unk_id) for c in texts[i]]
                                               for i in chunk])
            tokens, token_lengths = tokens.to(device), token_lengths.to(device)  # (B, T)、(B,)
            log_p = F.log_softmax(lm(tokens).float(), dim=-1)[:, :-1]  # (B, T-1, V)
            picked = log_p.gather(-1, tokens[:, 1:, None]).squeeze(-1)  # (B, T-1)
            real = length_mask(token_lengths - 1, tokens.size(1) - 1)  # (B, T-1)：补齐的位置不算
            total = seq2seq + weight * picked.masked_fill(~real, 0.0).sum(-1)
            for i, value in zip(chunk, total.tolist()):
                scores[i] = value
    return scores


def rescoring_candidates(model: Seq2SeqTransformer, syllable_lists, src_vocab: Vocab, tgt_vocab: Vocab, lm,
                         lm_vocab: Vocab, word_bigram: WordBigram, weight: float, beam_size: int = 4,
                         lexicon: dict | None = None, kbest: int = 4, beams=None,
                         lattices=None) -> list[list[tuple[str, float, float]]]:
    """每句的候选 ``[(汉字串, 浅融合总分, 词二元得分), ...]``：束里的在前（按浅融合总分从高到低），网格新给的在后。

    ``beams``：已经算好的 ``fused_convert(..., nbest=True)`` 的结果（同样的 λ、束宽和读音表），给了就不再搜索；
    ``lattices``：已经算好的每句 ``word_bigram.kbest(音节列表, kbest)``。第 10 章先各自解码整个测试集，再拿来重打分。
    """
    if beams is None:
        beams = fused_convert(model, syllable_lists, src_vocab, tgt_vocab, lm, lm_vocab, weight=weight,
                              beam_size=beam_size, lexicon=lexicon, nbest=True)
    if lattices is None:
        lattices = [word_bigram.kbest(syllables, kbest) for syllables in syllable_lists]
    if not len(beams) == len(lattices) == len(syllable_lists):
        raise ValueError(f"beams（{len(beams)} 句）、lattices（{len(lattices)} 句）必须与 syllable_lists"
                         f"（{len(syllable_lists)} 句）一一对应。")
    candidates = [{text: score for score, text in beam} for beam in beams]
    new = [(b, text) for b, lattice in enumerate(lattices) for _, text in lattice if text not in candidates[b]]
    new_scores = fused_log_prob(model, lm, [syllable_lists[b] for b, _ in new], [text for _, text in new],
                                src_vocab, tgt_vocab, lm_vocab, weight)
    for (b, text), score in zip(new, new_scores):
        candidates[b][text] = score
    return [[(text, score, word_bigram.score(text)) for text, score in found.items()] for found in candidates]


def pick_best(candidates: list[list[tuple[str, float, float]]], word_weight: float) -> list[str]:
    """每句取 ``浅融合总分 + μ · 词二元得分`` 最高的候选（并列时取前面的，即束里的）。"""
    return [max(found, key=lambda c: c[1] + word_weight * c[2])[0] for found in candidates]


def rescored_convert(model: Seq2SeqTransformer, syllable_lists, src_vocab: Vocab, tgt_vocab: Vocab, lm,
                     lm_vocab: Vocab, word_bigram: WordBigram, weight: float = 0.8, word_weight: float = 1.0,
                     beam_size: int = 4, lexicon: dict | None = None, kbest: int = 4) -> list[str]:
    """一批音节列表 -> 汉字串：浅融合束搜索和词网格各出候选，三个模型一起重打分（见模块说明）。"""
    if word_weight < 0:
        raise ValueError(f"word_weight（词二元语法的权重 μ）不能是负数，收到 {word_weight}。")
    return pick_best(rescoring_candidates(model, syllable_lists, src_vocab, tgt_vocab, lm, lm_vocab, word_bigram, weight,
                                          beam_size, lexicon, kbest), word_weight)


def rescoring_grid(model: Seq2SeqTransformer, pairs, src_vocab: Vocab, tgt_vocab: Vocab, lm, lm_vocab: Vocab,
                   word_bigram: WordBigram, weight: float, word_weights=WORD_WEIGHTS, beam_size: int = 4,
                   lexicon: dict | None = None, kbest: int = 4) -> dict[float, float]:
    """在 ``pairs``（验证集的小句）上逐个 μ 重打分，返回 ``{μ: 字准确率}``。候选和三项得分只算一次。"""
    references, syllable_lists = [text for _, text in pairs], [s for s, _ in pairs]
    candidates = rescoring_candidates(model, syllable_lists, src_vocab, tgt_vocab, lm, lm_vocab, word_bigram, weight,
                                      beam_size, lexicon, kbest)
    return {float(mu): char_accuracy(references, pick_best(candidates, mu)) for mu in word_weights}


@functools.lru_cache(maxsize=1)
def train_word_bigram() -> WordBigram:
    """在《人民日报》训练集的全部小句上数好的词二元语法（第一次调用要几秒钟：读语料、给几万个词注音；之后用缓存）。"""
    return WordBigram().fit(word_clauses("train"))


def word_bigram_fingerprint(word_bigram: WordBigram) -> dict:
    """记进 config 的"指纹"：词的种数和总词数。解码时重新数出来的词二元语法对不上，说明语料换了，μ 要重挑。"""
    return {"words": word_bigram.vocab_size, "tokens": word_bigram.total}


def tune_rescoring(model: Seq2SeqTransformer, config: dict, lm, fusion: dict, word_weights=WORD_WEIGHTS,
                   kbest: int = 4) -> dict:
    """在 :func:`~aigc_lib.tasks.pinyin.fusion.tune_fusion` 挑好的浅融合设置 ``fusion`` 上再挑 μ，返回加上
    ``word_weight``、``word_kbest``、``word_grid``、``word_bigram``（指纹）的解码设置。

    用同样的验证小句（``fusion["val_clauses"]`` 个）、同样的 λ、束宽和读音表；``lm`` 是同一个参考语言模型。
    """
    artifacts = config["artifacts"]
    src_vocab, tgt_vocab = Vocab.from_itos(artifacts["src_vocab"]), Vocab.from_itos(artifacts["tgt_vocab"])
    tuning = pinyin_pairs("val", max_chars=config["sizes"]["max_chars"])[: fusion["val_clauses"]]
    word_bigram = train_word_bigram()
    grid = rescoring_grid(model, tuning, src_vocab, tgt_vocab, lm.model, lm.vocab, word_bigram, fusion["lm_weight"],
                          word_weights, fusion["beam_size"], fusion["lexicon"], kbest)
    added = dict(zip(RESCORING_KEYS, (max(grid, key=grid.get), kbest, {str(mu): acc for mu, acc in grid.items()},
                                      word_bigram_fingerprint(word_bigram))))
    return {**fusion, **added}
