"""尺寸：每个任务用一个 dataclass 写下它的尺寸与超参数，这是它们唯一的出处。

每个字段用 :func:`size` 声明：中文说明、按档位的默认值、取值范围。``aigc train`` 的参数、
``--help`` 的说明、参数值的检查都由这些字段生成，别处不再列一遍::

    @dataclass
    class ToySizes(Sizes):
        epochs: int = size("训练轮数", smoke=1, cpu=5, gpu=10, at_least=1)
        width: int = size("隐藏层宽度", 16, at_least=1)
        mode: Literal["a", "b"] = size("两种做法之一", "a")

    ToySizes()            # 默认值：按当前档位（AIGC_PROFILE）在**构造时**取，而不是在导入时
    ToySizes(width=32)    # 覆盖一项

类型注解决定参数怎样解析：``int``、``float``、``str``、``bool``（命令行是 ``--x/--no-x``），
``Literal[...]`` 表示只能取其中之一。
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import typing
from dataclasses import MISSING, dataclass, field
from typing import Any, Callable, Literal

from ..core.runtime import pick


def size(help: str, default: Any = MISSING, *, smoke: Any = MISSING, cpu: Any = MISSING, gpu: Any = MISSING,
         at_least: float | None = None, above: float | None = None, below: float | None = None,
         at_most: float | None = None):
    """声明一个尺寸字段：``help`` 是中文说明（也是 ``--help`` 里的那一行）。

    默认值二选一：``default`` 各档位相同；或 ``smoke=``、``cpu=``（``gpu=`` 省略时同 cpu），构造 dataclass
    时才用 :func:`~aigc_lib.core.runtime.pick` 按当前档位选。``at_least`` / ``above`` / ``below`` / ``at_most`` 是取值范围
    （>=、>、<），命令行和 Python 里给的值都按它检查。
    """
    metadata = {"help": help, "at_least": at_least, "above": above, "below": below, "at_most": at_most}
    if default is not MISSING:
        return field(default=default, metadata=metadata)
    if smoke is MISSING or cpu is MISSING:
        raise TypeError("size() 需要 default，或者 smoke= 与 cpu=（gpu= 可省略）。")
    choices = {"smoke": smoke, "cpu": cpu} if gpu is MISSING else {"smoke": smoke, "cpu": cpu, "gpu": gpu}
    return field(default_factory=lambda: pick(**choices), metadata=metadata)


@dataclass
class Sizes:
    """所有任务都有的一项（``Task.train`` 用它建 AdamW）；任务的尺寸类继承它。

    也检查几项尺寸之间的关系（单独看每一项都合法、合在一起却不行的），在准备数据之前就报错。
    """

    weight_decay: float = size("AdamW 的权重衰减", 0.01, at_least=0)

    def __post_init__(self) -> None:
        d_model, num_heads = getattr(self, "d_model", None), getattr(self, "num_heads", None)
        if d_model is not None and num_heads is not None and d_model % num_heads:
            raise ValueError(f"参数 --d-model（{d_model}）要能被 --num-heads（{num_heads}）整除："
                             f"每个头分到 d_model / num_heads 维。例如 --d-model {num_heads * max(1, d_model // num_heads)}")


def _number(x) -> str:
    """报错里的边界值：整数原样写（4294967295，而不是 4.29497e+09），小数用最短的写法（0.001）。"""
    return str(x) if isinstance(x, int) else f"{x:g}"


@dataclass(frozen=True)
class SizeField:
    """一个尺寸字段的全部信息：名字、类型、可选值、范围、说明。命令行参数由它生成。"""

    name: str
    kind: type            # int / float / str / bool
    choices: tuple = ()   # Literal[...] 的可选值
    at_least: float | None = None
    above: float | None = None
    below: float | None = None
    help: str = ""
    at_most: float | None = None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def rule(self) -> tuple:
        """类型、可选值和范围（不含说明）。"""
        return (self.kind, self.choices, self.at_least, self.above, self.below, self.at_most)

    def same_meaning(self, other: SizeField) -> bool:
        """同名字段能不能共用一个命令行参数：类型和范围必须相同，一个名字只有一个意思。可选值可以各任务
        不同（``--tokens``：情感任务 word | char，语言模型 char | bpe），各任务按自己的可选值检查。"""
        if self.choices and other.choices:
            return self.rule()[:1] + self.rule()[2:] == other.rule()[:1] + other.rule()[2:]
        return self.rule() == other.rule()

    def check(self, value: Any) -> Any:
        """检查一个值（Python 里给的，或命令行解析好的）；不合格时抛 ``ValueError``（中文，说出合格的范围）。"""
        if self.kind is bool:
            if not isinstance(value, bool):
                raise ValueError(f"参数 {self.flag} 要 True 或 False，收到 {value!r}")
            return value
        if self.kind in (int, float):
            ok = isinstance(value, int) if self.kind is int else isinstance(value, (int, float))
            if not ok or isinstance(value, bool):
                raise ValueError(f"参数 {self.flag} 要一个{'整数' if self.kind is int else '数'}，收到 {value!r}")
            value = self.kind(value)
            if not math.isfinite(value):  # nan、inf 从来不是合法的尺寸或超参数
                raise ValueError(f"参数 {self.flag} 要一个有限的数，收到 {value!r}")
            if not self._in_range(value):
                raise ValueError(f"参数 {self.flag} 要{self.describe_range()}，收到 {value!r}")
            return value
        if not isinstance(value, str):
            raise ValueError(f"参数 {self.flag} 要一个字符串，收到 {value!r}")
        if self.choices and value not in self.choices:
            raise ValueError(f"参数 {self.flag} 只能是 {' | '.join(self.choices)}，收到 {value!r}")
        return value

    def parse(self, text: str) -> Any:
        """命令行里的字符串 -> 值，作为 argparse 的 ``type=``：不合格时抛 ``ArgumentTypeError``（中文）。"""
        try:
            if self.kind is int:
                value = int(text)
            elif self.kind is float:
                value = float(text)
            else:
                value = text
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"参数 {self.flag} 要一个{'整数' if self.kind is int else '数'}，收到 {text!r}") from None
        try:
            return self.check(value)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    def _in_range(self, value) -> bool:
        return ((self.at_least is None or value >= self.at_least) and (self.above is None or value > self.above)
                and (self.below is None or value < self.below) and (self.at_most is None or value <= self.at_most))

    def describe_range(self) -> str:
        """例如 "大于等于 1 的整数"、"0 到 1 之间（含 0、不含 1）的数"。"""
        noun = "整数" if self.kind is int else "数"
        if self.at_least is not None and self.below is not None:
            return f"[{_number(self.at_least)}, {_number(self.below)}) 之间的{noun}"
        if self.above is not None and self.at_most is not None:
            return f"({_number(self.above)}, {_number(self.at_most)}] 之间的{noun}"
        if self.at_least is not None and self.at_most is not None:
            return f"[{_number(self.at_least)}, {_number(self.at_most)}] 之间的{noun}"
        parts = [f"大于等于 {_number(self.at_least)}" if self.at_least is not None else "",
                 f"大于 {_number(self.above)}" if self.above is not None else "",
                 f"小于 {_number(self.below)}" if self.below is not None else "",
                 f"小于等于 {_number(self.at_most)}" if self.at_most is not None else ""]
        text = "、".join(p for p in parts if p)
        return f"{text} 的{noun}" if text else f"一个{noun}"


def size_fields(sizes_class: type) -> list[SizeField]:
    """一个尺寸 dataclass 的所有字段（按声明顺序）。"""
    hints = typing.get_type_hints(sizes_class)
    result = []
    for f in dataclasses.fields(sizes_class):
        hint = hints[f.name]
        choices: tuple = ()
        if typing.get_origin(hint) is Literal:
            choices = typing.get_args(hint)
            kind = type(choices[0])
        elif hint in (int, float, str, bool):
            kind = hint
        else:
            raise TypeError(f"尺寸 {sizes_class.__name__}.{f.name} 的类型只能是 int、float、str、bool 或 Literal，"
                            f"收到 {hint!r}。")
        meta = f.metadata
        if "help" not in meta:
            raise TypeError(f"尺寸 {sizes_class.__name__}.{f.name} 要用 size(\"中文说明\", ...) 声明。")
        result.append(SizeField(f.name, kind, choices, meta["at_least"], meta["above"], meta["below"], meta["help"],
                                meta["at_most"]))
    return result


def build_sizes(sizes_class: type, overrides: dict | None = None,
                unknown: Callable[[str, list[SizeField]], Exception] | None = None) -> dict:
    """默认值（按当前档位）加上 ``overrides`` 里不是 None 的项，逐项检查后返回普通字典。

    ``overrides`` 里有这个类没有的字段时，抛 ``unknown(名字, 所有字段)`` 给出的异常（默认 ``ValueError``）。
    """
    fields = {f.name: f for f in size_fields(sizes_class)}
    given = {}
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        if key not in fields:
            if unknown is not None:
                raise unknown(key, list(fields.values()))
            raise ValueError(f"没有尺寸 {key!r}；可以调整的有：{', '.join(fields)}。")
        given[key] = fields[key].check(value)
    return dataclasses.asdict(sizes_class(**given))
