"""``aigc`` 命令背后的任务：每个任务知道怎样准备数据、搭模型、训练、评估和预测。

一个任务一个文件夹 ``tasks/<名字>/``：``task.py`` 里是任务类、它的尺寸 dataclass 和模型表，
旁边是它自己的数据准备（``data.py``）和基线（``baselines.py``）。公共部分在 ``base.py``
（:class:`Task`、:class:`ModelSpec`、:func:`load_run`、:func:`resume_run`）和 ``sizes.py``（:func:`size`、:class:`Sizes`）。

命令行只认识下面这张表 ``TASKS``；新增一个任务只需写好它的文件夹，再登记::

    from aigc_lib.tasks import register
    register(MyTask())        # 之后 aigc train --task my ... 就能用，参数和 --help 自动生成

新增一个模型只需在任务的 ``models`` 表里加一项。
"""

from .base import ModelSpec, Task, TaskError, load_run, resume_run
from .sizes import Sizes, size, size_fields

TASKS: dict[str, Task] = {}


def register(task: Task) -> Task:
    """登记一个任务（按 ``task.name``），返回它本身。

    会检查：名字没被占用、至少有一个模型、同名的尺寸在所有任务里类型和范围相同
    （一个名字只有一个意思，命令行参数才能共用）。
    """
    if not task.name or task.name in TASKS:
        raise ValueError(f"任务名 {task.name!r} 为空或已被占用；已有：{', '.join(TASKS)}。")
    if not task.models:
        raise ValueError(f"任务 {task.name} 的模型表 models 是空的。")
    known = {f.name: (f, name) for other in TASKS.values() for name, spec in _specs(other)
             for f in size_fields(spec.sizes)}
    for model, spec in task.models.items():
        for f in size_fields(spec.sizes):
            if f.name in known and not known[f.name][0].same_meaning(f):
                raise ValueError(f"任务 {task.name} 的尺寸 {f.name} 与 {known[f.name][1]} 里的同名尺寸类型或范围不同；"
                                 "同名的尺寸必须是同一个意思。")
    TASKS[task.name] = task
    return task


def unregister(name: str) -> None:
    """取消登记（测试里登记的临时任务用完要取消）。"""
    TASKS.pop(name, None)


def _specs(task: Task):
    return [(f"{task.name}/{model}", spec) for model, spec in task.models.items()]


def get_task(name: str) -> Task:
    """按名字取任务；名字不对时报错并列出所有任务。"""
    try:
        return TASKS[name]
    except KeyError:
        raise TaskError(f"没有名为 {name!r} 的任务。可用的任务：{', '.join(TASKS)}。") from None


from .sentiment import SentimentTask  # noqa: E402
from .tagging import TaggingTask  # noqa: E402
from .lm import LanguageModelTask  # noqa: E402
from .pinyin import PinyinTask  # noqa: E402
from .sft import SFTTask  # noqa: E402

for _task in (SentimentTask(), TaggingTask("segment"), TaggingTask("pos"), TaggingTask("ner"),
              LanguageModelTask(), PinyinTask(), SFTTask()):
    register(_task)

__all__ = ["TASKS", "ModelSpec", "Sizes", "Task", "TaskError", "get_task", "load_run", "register", "resume_run",
           "size", "unregister"]
