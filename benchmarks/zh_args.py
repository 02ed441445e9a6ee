"""基准脚本共用的命令行解析器：帮助和出错提示是中文（argparse 自带的 usage、options、error 是英文）。

用法与 ``argparse.ArgumentParser`` 相同::

    parser = ChineseArgumentParser(description="……")
    parser.add_argument("--lanes", type=int, default=1, help="同时训练几个")
    args = parser.parse_args()

常见的写错（值不是整数、不在可选范围、少了值、多了不认识的参数）换成中文说明；其余的原样打印。
``aigc`` 命令自己的解析在 ``aigc_lib/cli.py``，那里还检查子命令，不用这个类。
"""

from __future__ import annotations

import argparse
import re
import sys

_KIND = {"int": "一个整数", "float": "一个数"}

# argparse 的英文出错信息 -> 中文（按 Python 3.10-3.13 的写法；对不上的原样打印）
_MESSAGES = [
    (r"argument (\S+): invalid (int|float) value: (.+)", lambda m: f"参数 {m[1]} 要{_KIND[m[2]]}，收到的是 {m[3]}"),
    (r"argument (\S+): invalid choice: (.+?) \(choose from (.+)\)", lambda m: f"参数 {m[1]} 不能是 {m[2]}，可选：{m[3]}"),
    (r"argument (\S+): expected one argument", lambda m: f"参数 {m[1]} 后面要跟一个值"),
    (r"argument (\S+): ignored explicit argument (.+)", lambda m: f"参数 {m[1]} 不带值，却收到了 {m[2]}"),
    (r"unrecognized arguments: (.+)", lambda m: f"不认识的参数：{m[1]}（用 --help 看有哪些参数）"),
]


def chinese_message(message: str) -> str:
    """argparse 的一条英文出错信息 -> 中文；不认识的原样返回。

    >>> chinese_message("argument --lanes: invalid int value: 'two'")
    "参数 --lanes 要一个整数，收到的是 'two'"
    """
    for pattern, say in _MESSAGES:
        match = re.fullmatch(pattern, message)
        if match:
            return say(match)
    return message


class _Formatter(argparse.HelpFormatter):
    def add_usage(self, usage, actions, groups, prefix=None):
        super().add_usage(usage, actions, groups, "用法：" if prefix is None else prefix)


class ChineseArgumentParser(argparse.ArgumentParser):
    """帮助里是"用法：""选项"和"显示帮助并退出"；出错时打印用法和一行中文，返回码 2（与 argparse 相同）。

    分组标题后面的冒号仍是 argparse 写死的半角":"。"""

    def __init__(self, **kwargs):
        super().__init__(formatter_class=_Formatter, add_help=False, **kwargs)
        self._optionals.title = "选项"  # argparse 没有公开的改法；这个属性从 Python 3.2 起就在
        self.add_argument("-h", "--help", action="help", help="显示帮助并退出")

    def add_argument(self, *names, **kwargs):
        """参数值的占位名默认是 N（整数）或 X（其余），不用 argparse 的大写英文参数名（与 aigc 命令相同）。"""
        if kwargs.get("action") is None and "metavar" not in kwargs and "choices" not in kwargs and names[0][0] == "-":
            kwargs["metavar"] = "N" if kwargs.get("type") is int else "X"
        return super().add_argument(*names, **kwargs)

    def error(self, message: str):
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}：错误：{chinese_message(message)}\n")
