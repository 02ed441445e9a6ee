"""语言模型任务 ``lm``：数据（:func:`split_text`、:func:`char_vocab`、:func:`make_blocks`）、词元
（按字的 :class:`CharTokenizer`，或 :func:`train_text_bpe` 训练的 BPE）、按字计的评分（:func:`score_text`、
:func:`characters_ended`）、尺寸和任务类都在 ``task.py``；第 09、14 章也直接用这几个函数。"""

from .task import (
    SEPARATOR,
    CharTokenizer,
    GPTSizes,
    LanguageModelTask,
    LMSizes,
    LSTMSizes,
    build_gpt,
    build_lstm,
    char_vocab,
    characters_ended,
    make_blocks,
    score_text,
    split_text,
    tokenizer_of,
    train_text_bpe,
)

__all__ = ["CharTokenizer", "GPTSizes", "LMSizes", "LSTMSizes", "LanguageModelTask", "SEPARATOR", "build_gpt",
           "build_lstm", "char_vocab", "characters_ended", "make_blocks", "score_text", "split_text", "tokenizer_of",
           "train_text_bpe"]
