"""拼音 -> 汉字任务 ``pinyin``：平行语料与批次在 ``data.py``，两个经典基线在 ``baselines.py``，
尺寸、模型表和任务类在 ``task.py``，解码时融合语言模型在 ``fusion.py``。"""

from .baselines import BigramHMM, MostFrequentChar
from .data import char_accuracy, clause_pairs, parse_pinyin, pinyin_pairs, seq2seq_collate, split_clauses, to_pinyin
from .fusion import FusionDecoder, fused_convert, syllable_lexicon
from .task import UNKNOWN_CHAR, PinyinSizes, PinyinTask, build_seq2seq, build_vocabs, convert, encode_pairs

__all__ = ["BigramHMM", "FusionDecoder", "MostFrequentChar", "PinyinSizes", "PinyinTask", "UNKNOWN_CHAR", "build_seq2seq",
           "build_vocabs", "char_accuracy", "clause_pairs", "convert", "encode_pairs", "fused_convert", "parse_pinyin",
           "pinyin_pairs", "seq2seq_collate", "split_clauses", "syllable_lexicon", "to_pinyin"]
