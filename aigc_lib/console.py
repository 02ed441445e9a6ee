"""终端里的对齐：汉字等全角字符在等宽字体里占两格，用 ``len`` 对齐中文表格会错位。

    >>> display_width("章节ab"), pad("章节", 6) + "|"
    (6, '章节  |')
"""

from __future__ import annotations

import unicodedata


def display_width(text: str) -> int:
    """等宽字体里的显示宽度：汉字等全角字符（East Asian Width 为 W、F）占两格，其余一格。"""
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def pad(text: str, width: int, right: bool = False) -> str:
    """用空格补到显示宽度 ``width``（已经够宽就原样返回）；``right=True`` 时右对齐。"""
    fill = " " * max(width - display_width(text), 0)
    return fill + text if right else text + fill
