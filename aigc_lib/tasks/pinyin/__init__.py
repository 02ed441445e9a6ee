"""拼音 -> 汉字任务 ``pinyin``：平行语料与批次在 ``data.py``，两个经典基线在 ``baselines.py``，
尺寸、模型表和任务类在 ``task.py``，解码在 ``decoding.py``，解码时融合语言模型在 ``fusion.py``，
第三个经典基线词二元语法在 ``word_bigram.py``，三个模型一起给候选重打分在 ``rescoring.py``。"""

from .baselines import BigramHMM, MostFrequentChar
from .data import (UNKNOWN_CHAR, char_accuracy, clause_pairs, parse_pinyin, pinyin_pairs, pinyin_syllables, seq2seq_collate,
                   split_clauses, split_syllables, to_pinyin, word_clauses)
from .decoding import convert, decode_in_batches, ids_to_text
from .fusion import FusionDecoder, fused_convert, fusion_grid, syllable_lexicon, tune_fusion
from .rescoring import (RESCORING_KEYS, WORD_WEIGHTS, fused_log_prob, pick_best, rescored_convert, rescoring_candidates, rescoring_grid,
                        train_word_bigram, tune_rescoring)
from .task import PinyinSizes, PinyinTask, build_seq2seq, build_vocabs, encode_pairs
from .word_bigram import WordBigram

__all__ = ["BigramHMM", "FusionDecoder", "MostFrequentChar", "PinyinSizes", "PinyinTask", "RESCORING_KEYS", "UNKNOWN_CHAR",
           "WORD_WEIGHTS",
           "WordBigram", "build_seq2seq", "build_vocabs", "char_accuracy", "clause_pairs", "convert",
           "decode_in_batches", "encode_pairs", "fused_convert", "fused_log_prob", "fusion_grid", "ids_to_text",
           "parse_pinyin", "pick_best", "pinyin_pairs", "pinyin_syllables", "rescored_convert", "rescoring_candidates", "rescoring_grid",
           "seq2seq_collate", "split_clauses", "split_syllables", "syllable_lexicon", "to_pinyin", "train_word_bigram", "tune_fusion",
           "tune_rescoring", "word_clauses"]
