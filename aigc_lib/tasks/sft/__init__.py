"""指令微调任务 ``sft``：指令数据与对话模板（``data.py``）、打分与基线（``scoring.py``）、
任务类、尺寸和模型（``task.py``）。第 15 章直接用这里的函数。"""

from .data import (ASSISTANT, END, KINDS, NEW_TOKENS, SPECIAL_TOKENS, USER, Example, chat_tokens, chat_vocab,
                   conversations, encode_conversation, instruction_examples, parse_chat, reading_groups, render_chat, syllables,
                   to_model_text)
from .scoring import METRICS, Baseline, parse_entities, score, word_spans
from .task import SFTSizes, SFTTask, build_chat_gpt, extend_rows, init_syllable_rows, pad_conversations

__all__ = ["ASSISTANT", "Baseline", "END", "Example", "KINDS", "METRICS", "NEW_TOKENS", "SFTSizes", "SFTTask",
           "SPECIAL_TOKENS", "USER", "build_chat_gpt", "chat_tokens", "chat_vocab", "conversations",
           "encode_conversation", "extend_rows", "init_syllable_rows", "instruction_examples", "pad_conversations", "parse_chat",
           "parse_entities", "reading_groups", "render_chat", "score", "syllables", "to_model_text", "word_spans"]
