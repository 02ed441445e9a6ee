"""浅融合（shallow fusion）：拼音 -> 汉字解码时，把一个读过更多文字的语言模型的意见加进来。

seq2seq 只在拼音小句上训练；字级 GPT（模型库的 ``lm-gpt``）读过整份《人民日报》训练集，更知道
"什么字后面跟什么字"。束搜索里每个候选字 c 的得分改成::

    log p_seq2seq(c | 拼音, 前面的字)  +  λ · log p_LM(c | 前面的字)

λ（``weight``）在验证集上挑。两个模型各自训练、互不相干，融合只发生在解码时。再加一个**读音约束**
（:func:`syllable_lexicon`）：第 t 个字只能是训练语料里写成过第 t 个音节的字。

实现上只是给 :class:`~aigc_lib.models.seq2seq.Seq2SeqDecoder` 包一层（:class:`FusionDecoder`），
束搜索 :func:`~aigc_lib.generation.beam_search_batch` 一行不改：它先对 seq2seq 的 logits 取 log_softmax，
再调用 ``mask_logits``，我们在那里加上 λ · log p_LM（不重新归一化，得分就是上面两项之和）。

    lexicon = syllable_lexicon(train_pairs, tgt_vocab)
    fused_convert(seq2seq, syllable_lists, src_vocab, tgt_vocab, lm=gpt.model, lm_vocab=gpt.vocab,
                  weight=0.5, beam_size=4, lexicon=lexicon)

模型库里的参考模型 ``pinyin`` 导出时由 :func:`tune_fusion` 在验证集上挑好 λ，连同读音表一起记在它的 config 里
（``config["decoding"]``）；``rescoring.py`` 的 ``tune_rescoring`` 再在上面加上词二元重打分的 μ。
``aigc evaluate/predict pretrained:pinyin`` 和 ``pretrained("pinyin")`` 都按记下的设置解码。
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ...core.runtime import eval_mode
from ...data.text import Vocab
from ...generation import beam_search_batch
from ...models.seq2seq import Seq2SeqDecoder, Seq2SeqTransformer
from .data import char_accuracy, pinyin_pairs
from .decoding import decode_in_batches

FUSION_WEIGHTS = (0.0, 0.3, 0.5, 0.8, 1.0)  # λ 的候选值（0 = 不用语言模型的束搜索）
LM_CONTEXT = "，"  # 小句是在标点处切开的：给语言模型一个逗号当作"前文"，它就知道这是一个小句的开头


def syllable_lexicon(pairs, tgt_vocab: Vocab) -> dict[str, list[int]]:
    """平行语料 ``[(音节列表, 汉字串), ...]`` -> ``{音节: [写成过的字在目标字表里的编号, ...]}``（字表外的字不算）。

    >>> vocab = Vocab.from_itos(["<pad>", "<unk>", "<bos>", "<eos>", "是", "市", "我"])
    >>> syllable_lexicon([(["shi", "wo"], "是我"), (["shi"], "市")], vocab)
    {'shi': [4, 5], 'wo': [6]}
    """
    lexicon: dict[str, set[int]] = {}
    for syllables, text in pairs:
        for syllable, char in zip(syllables, text):
            if char in tgt_vocab:
                lexicon.setdefault(syllable, set()).add(tgt_vocab[char])
    return {syllable: sorted(ids) for syllable, ids in sorted(lexicon.items())}


def allowed_mask(syllable_lists, lexicon: dict[str, list[int]], vocab_size: int) -> torch.Tensor:
    """``(B, T, V)`` 布尔：第 b 句第 t 个字可以是哪些字。音节不在 ``lexicon`` 里时不限制；
    句子结束以后的位置（那里要写 <eos>）也不限制。"""
    T = max(len(s) for s in syllable_lists)
    allowed = torch.ones(len(syllable_lists), T, vocab_size, dtype=torch.bool)
    for b, syllables in enumerate(syllable_lists):
        for t, syllable in enumerate(syllables):
            if lexicon.get(syllable):
                allowed[b, t] = False
                allowed[b, t, lexicon[syllable]] = True
    return allowed


class FusionDecoder:
    """逐步协议（``start`` / ``step`` / ``reorder`` / ``mask_logits`` / ``steps``）的一个包装：
    内层是 seq2seq 的 :class:`~aigc_lib.models.seq2seq.Seq2SeqDecoder`，旁边跟着一个字级语言模型。

    ``tgt_to_lm`` (V_tgt,)：目标字表的每个编号在语言模型字表里的编号（字表外的字 -> LM 的 <unk>）。
    <pad>、<bos>、<eos> 上语言模型不发表意见（加 0）。
    """

    def __init__(self, decoder: Seq2SeqDecoder, lm, tgt_to_lm: torch.Tensor, weight: float, context_id: int) -> None:
        model = decoder.model
        self.decoder, self.lm, self.weight = decoder, lm, weight
        self.tgt_to_lm = tgt_to_lm.to(decoder.src.device)
        self.neutral = torch.tensor([model.pad_id, model.bos_id, model.eos_id], device=decoder.src.device)
        self.context_id = context_id

    def steps(self, max_new_tokens=None) -> int:
        return self.decoder.steps(max_new_tokens)

    def _lm_log_probs(self) -> torch.Tensor:
        tokens = self.lm_tokens[:, -self.lm.context_len:]
        log_p = F.log_softmax(self.lm(tokens, last_only=True)[:, -1].float(), dim=-1)  # (N, V_lm)
        log_p = log_p[:, self.tgt_to_lm]  # (N, V_tgt)：按目标字表的顺序排好
        log_p[:, self.neutral] = 0.0
        return log_p

    def start(self) -> torch.Tensor:
        logits = self.decoder.start()  # (B, V_tgt)
        self.lm_tokens = torch.full((logits.size(0), 1), self.context_id, dtype=torch.long, device=logits.device)
        self.lm_log_p = self._lm_log_probs()
        return logits

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        logits = self.decoder.step(tokens)
        self.lm_tokens = torch.cat([self.lm_tokens, self.tgt_to_lm[tokens][:, None]], dim=1)
        self.lm_log_p = self._lm_log_probs()
        return logits

    def reorder(self, index: torch.Tensor) -> None:
        self.decoder.reorder(index)
        self.lm_tokens, self.lm_log_p = self.lm_tokens.index_select(0, index), self.lm_log_p.index_select(0, index)

    def mask_logits(self, log_probs: torch.Tensor, step: int) -> torch.Tensor:
        """``log_probs`` 是 seq2seq 的 log_softmax（束搜索传进来的）：加上 λ · log p_LM，再套上读音和长度约束。"""
        return self.decoder.mask_logits(log_probs + self.weight * self.lm_log_p, step)


@torch.inference_mode()
def fused_convert(model: Seq2SeqTransformer, syllable_lists, src_vocab: Vocab, tgt_vocab: Vocab, lm, lm_vocab: Vocab,
                  weight: float = 0.5, beam_size: int = 4, lexicon: dict | None = None,
                  batch_size: int = 128, nbest: bool = False) -> list:
    """一批音节列表 -> 汉字串：束搜索 + 浅融合（+ 可选的读音约束），输出与输入等长，顺序与输入相同。

    ``weight=0``、没有 ``lexicon`` 时就是普通的束搜索；``beam_size=1`` 时是贪心。
    分批、还原顺序和 ``<unk>`` 的写法与 :func:`~aigc_lib.tasks.pinyin.decoding.convert` 共用（:func:`decode_in_batches`）。

    ``nbest=True``：每句返回束里留下的全部候选 ``[(总分, 汉字串), ...]``（从高到低），总分是
    :math:`\\sum_t [\\log p_\\text{seq2seq} + λ \\log p_\\text{LM}]`，含句末 <eos> 那一步（那一步语言模型不参与），
    不做长度归一化：``rescoring.py`` 拿它和别的候选比。
    """
    if weight < 0:
        raise ValueError(f"weight（语言模型的权重 λ）不能是负数，收到 {weight}。")
    device = next(model.parameters()).device
    tgt_to_lm = torch.tensor([lm_vocab.stoi.get(token, lm_vocab.unk_id) for token in tgt_vocab.itos])
    context_id = lm_vocab.stoi.get(LM_CONTEXT, lm_vocab.unk_id)

    def decode(src, lengths, chunk):
        allowed = None if lexicon is None else allowed_mask([syllable_lists[i] for i in chunk], lexicon, len(tgt_vocab))
        inner = Seq2SeqDecoder(model, src, lengths, target_lengths=lengths, allowed=allowed)  # 它把 allowed 搬到 src 的设备
        decoder = FusionDecoder(inner, lm, tgt_to_lm, weight, context_id)
        found = beam_search_batch(decoder, beam_size, decoder.steps(), stop_ids=[model.eos_id], nbest=nbest)
        if nbest:  # 束搜索的得分是除以长度（含 <eos>，length_penalty=1）的平均值：乘回去就是总分
            return [[(model._strip(out), score * len(out)) for out, score in beam] for beam in found]
        return [model._strip(out) for out, _ in found]  # 去掉 <eos>

    with eval_mode(model), eval_mode(lm):  # 解码时关掉 dropout，结束后两个模型恢复原来的 train/eval 状态
        return decode_in_batches(syllable_lists, src_vocab, tgt_vocab, decode, device, batch_size, nbest=nbest)


def fusion_grid(model: Seq2SeqTransformer, pairs, src_vocab: Vocab, tgt_vocab: Vocab, lm, lm_vocab: Vocab,
                weights=FUSION_WEIGHTS, beam_size: int = 4, lexicon: dict | None = None) -> dict[float, float]:
    """在 ``pairs``（验证集的小句）上逐个 λ 解码，返回 ``{λ: 字准确率}``：挑 λ 用，测试集一个字也不看。"""
    references, syllable_lists = [text for _, text in pairs], [s for s, _ in pairs]
    return {float(w): char_accuracy(references, fused_convert(model, syllable_lists, src_vocab, tgt_vocab, lm, lm_vocab,
                                                              weight=w, beam_size=beam_size, lexicon=lexicon))
            for w in weights}


def tune_fusion(model: Seq2SeqTransformer, config: dict, lm, lm_name: str, weights=FUSION_WEIGHTS,
                beam_size: int = 4, val_clauses: int = 1000) -> dict:
    """给一个训练好的拼音模型挑浅融合的 λ，返回写进 ``config["decoding"]`` 的解码设置。

    ``lm`` 是模型库里名叫 ``lm_name`` 的参考语言模型（:class:`~aigc_lib.zoo.Pretrained`）。读音表由模型自己的
    训练小句建（与训练时同样的 ``max_chars``）；λ 在验证集前 ``val_clauses`` 个小句上挑（:func:`fusion_grid`）。
    返回的字典里还记着这个语言模型权重的 sha256：以后语言模型换了，λ 就不再是挑过的那个，解码时会报错。
    """
    artifacts, sizes = config["artifacts"], config["sizes"]
    max_chars = sizes["max_chars"]
    src_vocab, tgt_vocab = Vocab.from_itos(artifacts["src_vocab"]), Vocab.from_itos(artifacts["tgt_vocab"])
    train_pairs = pinyin_pairs("train", max_chars=max_chars, limit=sizes.get("train_limit") or None)
    lexicon = syllable_lexicon(train_pairs, tgt_vocab)
    tuning = pinyin_pairs("val", max_chars=max_chars)[:val_clauses]
    grid = fusion_grid(model, tuning, src_vocab, tgt_vocab, lm.model, lm.vocab, weights, beam_size, lexicon)
    return {"lm": lm_name, "lm_sha256": lm.provenance["weights"]["sha256"], "lm_weight": max(grid, key=grid.get),
            "beam_size": beam_size, "val_clauses": len(tuning), "val_grid": {str(w): acc for w, acc in grid.items()},
            "lexicon": lexicon}
