"""``aigc`` 命令背后的任务：每个任务知道怎样准备数据、搭模型、训练、评估和预测。

一个任务一个文件（``sentiment.py`` 情感分类……），都继承 :class:`~aigc_lib.tasks.base.Task`，
并在下面登记。命令行只认识这张表，所以新增一个任务不需要改 ``cli.py``。
"""

from .base import Task, TaskError, load_run
from .sentiment import SentimentTask

_ALL: list[Task] = [SentimentTask()]
# 新任务在这里各追加一行，例如：_ALL.append(TaggingTask("ner"))
from .tagging import TaggingTask  # noqa: E402
_ALL += [TaggingTask("segment"), TaggingTask("pos"), TaggingTask("ner")]
from .lm import LanguageModelTask  # noqa: E402
_ALL.append(LanguageModelTask())
from .pinyin import PinyinTask  # noqa: E402
_ALL.append(PinyinTask())

TASKS: dict[str, Task] = {task.name: task for task in _ALL}


def get_task(name: str) -> Task:
    """按名字取任务；名字不对时报错并列出所有任务。"""
    try:
        return TASKS[name]
    except KeyError:
        raise TaskError(f"没有名为 {name!r} 的任务。可用的任务：{', '.join(TASKS)}。") from None


__all__ = ["TASKS", "Task", "TaskError", "get_task", "load_run"]
