"""拼音 -> 汉字的解码：一批音节列表 -> 汉字串。

:func:`convert` 用 seq2seq 自己解码（贪心或束搜索）；同一文件夹 ``fusion.py`` 的
:func:`~aigc_lib.tasks.pinyin.fusion.fused_convert` 再加上语言模型。两者共用 :func:`decode_in_batches`
（按长度分批、还原顺序、把 ``<unk>`` 写成一个 □）。
"""

from __future__ import annotations

import sys

import torch

from ...data.text import Vocab
from ...models.seq2seq import Seq2SeqTransformer
from ...plotting import progress
from .data import UNKNOWN_CHAR, seq2seq_collate


def ids_to_text(ids, tgt_vocab: Vocab) -> str:
    """目标编号列表 -> 汉字串。``<unk>`` 写成一个 ``□``，而不是五个字符 "<unk>"：否则后面每个字都错位，
    字准确率和 BLEU 都会算错。"""
    return "".join(UNKNOWN_CHAR if token_id == tgt_vocab.unk_id else token
                   for token_id, token in zip(ids, tgt_vocab.decode(ids)))


def decode_in_batches(syllable_lists, src_vocab: Vocab, tgt_vocab: Vocab, decode, device,
                      batch_size: int = 256, nbest: bool = False) -> list:
    """分批解码的公共部分：音节列表 -> 汉字串，结果顺序与输入相同。

    为了少补齐，先按长度排序再分批，最后还原顺序。每一批调用 ``decode(src (B, S), lengths (B,), chunk)``
    （``chunk`` 是这批在 ``syllable_lists`` 里的下标），它返回每句的目标编号列表（不含 <bos>、<eos>），
    编号由 :func:`ids_to_text` 变成汉字串。``nbest=True`` 时 ``decode`` 返回每句的 ``[(编号列表, 得分), ...]``，
    这里相应地返回每句的 ``[(得分, 汉字串), ...]``。
    """
    ids = [src_vocab.encode(s) for s in syllable_lists]
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    results: list = [""] * len(ids)
    # 终端里给进度条（整个测试集的浅融合要一两分钟）；notebook、日志和测试里不打印，输出保持干净
    starts = progress(range(0, len(order), batch_size), desc="解码", unit="批", leave=False,
                      disable=not sys.stderr.isatty())
    for start in starts:
        chunk = order[start : start + batch_size]
        src, lengths, _, _ = seq2seq_collate([(ids[i], []) for i in chunk])
        for i, out in zip(chunk, decode(src.to(device), lengths.to(device), chunk)):
            results[i] = ([(score, ids_to_text(ids, tgt_vocab)) for ids, score in out] if nbest
                          else ids_to_text(out, tgt_vocab))
    return results


@torch.inference_mode()
def convert(model: Seq2SeqTransformer, syllable_lists, src_vocab: Vocab, tgt_vocab: Vocab, device=None,
            beam_size: int = 1, batch_size: int = 256) -> list[str]:
    """一批音节列表 -> 汉字串（贪心或束搜索，输出与输入等长）。结果顺序与输入相同；
    分批和 ``<unk>`` 的写法见 :func:`decode_in_batches`。"""

    def decode(src, lengths, chunk):
        if beam_size == 1:
            return model.greedy_decode(src, lengths, target_lengths=lengths)
        return model.beam_search(src, lengths, beam_size=beam_size, target_lengths=lengths)

    device = next(model.parameters()).device if device is None else device
    return decode_in_batches(syllable_lists, src_vocab, tgt_vocab, decode, device, batch_size)
