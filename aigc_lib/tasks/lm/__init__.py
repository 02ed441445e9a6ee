"""字符级语言模型任务 ``lm``：数据（:func:`split_text`、:func:`char_vocab`、:func:`make_blocks`）、
尺寸和任务类都在 ``task.py``；第 09 章也直接用这几个数据函数。"""

from .task import (
    SEPARATOR,
    GPTSizes,
    LanguageModelTask,
    LMSizes,
    LSTMSizes,
    build_gpt,
    build_lstm,
    char_vocab,
    make_blocks,
    split_text,
)

__all__ = ["GPTSizes", "LMSizes", "LSTMSizes", "LanguageModelTask", "SEPARATOR", "build_gpt", "build_lstm",
           "char_vocab", "make_blocks", "split_text"]
