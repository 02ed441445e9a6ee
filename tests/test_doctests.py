"""库里每个模块的文档字符串示例（``>>>``）都照写的那样运行：学习者抄走的例子必须是真的。"""

import doctest
import importlib
import pkgutil
import random

import pytest
import torch
import torch.nn as nn

import aigc_lib

MODULES = sorted(m.name for m in pkgutil.walk_packages(aigc_lib.__path__, "aigc_lib."))


def test_the_walk_finds_the_library():
    assert len(MODULES) > 50 and "aigc_lib.metrics.sequence" in MODULES


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name, monkeypatch):
    monkeypatch.setenv("AIGC_PROGRESS", "off")
    module = importlib.import_module(name)
    # 示例里常用、但模块自己不一定导入的名字
    result = doctest.testmod(module, extraglobs={"torch": torch, "nn": nn, "random": random},
                             optionflags=doctest.ELLIPSIS, report=False)
    assert result.failed == 0, f"{name}：{result.failed} 个示例与文档字符串写的不一样（哪个示例、期望什么、实际得到什么，见下面捕获的输出）"


def test_a_wrong_example_is_caught(tmp_path, monkeypatch):
    """对照：文档字符串写错了，这套检查确实会失败。"""
    (tmp_path / "wrong_example.py").write_text('def f():\n    """\n    >>> 1 + 1\n    3\n    """\n', "utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module("wrong_example")
    assert doctest.testmod(module, report=False).failed == 1
