"""拼音 -> 汉字任务 ``pinyin``：平行语料与批次在 ``data.py``，两个经典基线在 ``baselines.py``，
尺寸、模型表和任务类在 ``task.py``，解码在 ``decoding.py``，解码时融合语言模型在 ``fusion.py``。"""

from .baselines import BigramHMM, MostFrequentChar
from .data import char_accuracy, clause_pairs, parse_pinyin, pinyin_pairs, seq2seq_collate, split_clauses, to_pinyin
from .decoding import UNKNOWN_CHAR, convert, decode_in_batches
from .fusion import FusionDecoder, fused_convert, fusion_grid, syllable_lexicon, tune_fusion
from .task import PinyinSizes, PinyinTask, build_seq2seq, build_vocabs, encode_pairs

__all__ = ["BigramHMM", "FusionDecoder", "MostFrequentChar", "PinyinSizes", "PinyinTask", "UNKNOWN_CHAR", "build_seq2seq",
           "build_vocabs", "char_accuracy", "clause_pairs", "convert", "decode_in_batches", "encode_pairs",
           "fused_convert", "fusion_grid", "parse_pinyin", "pinyin_pairs", "seq2seq_collate", "split_clauses",
           "syllable_lexicon", "to_pinyin", "tune_fusion"]
