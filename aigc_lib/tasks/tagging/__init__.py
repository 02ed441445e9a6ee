"""序列标注任务 ``segment`` / ``pos`` / ``ner``（共用一个任务类和一份尺寸）：都在 ``task.py`` 里，
其中不依赖 ``Task`` 的数据函数（:func:`sentence_tags`、:func:`split_long`、:func:`pad_tagged` ……）也给第 03 章用。"""

from .task import (
    BMES_TAGS,
    ENTITY_NAMES,
    IGNORE,
    NER_TAGS,
    SCHEMES,
    TaggingSizes,
    TaggingTask,
    build_tagger,
    decode_in_batches,
    pad_tagged,
    score_tags,
    sentence_tags,
    split_long,
    tag_inventory,
    tagged_text,
    tagging_step,
    tags_to_words,
)

__all__ = ["BMES_TAGS", "ENTITY_NAMES", "IGNORE", "NER_TAGS", "SCHEMES", "TaggingSizes", "TaggingTask", "build_tagger",
           "decode_in_batches", "pad_tagged", "score_tags", "sentence_tags", "split_long", "tag_inventory",
           "tagged_text", "tagging_step", "tags_to_words"]
