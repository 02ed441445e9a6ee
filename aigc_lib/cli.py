"""``aigc`` 命令：在终端里训练、评估、预测，也能在 torchrun 下多进程训练。

    aigc train --task sentiment --model gru --out runs/gru
    aigc evaluate runs/gru --split test --json
    aigc predict runs/gru "质量很好，物流也快" "物流太慢了"
    aigc generate runs/gpt "今天" --max-new-tokens 60 --top-p 0.9 --seed 1
    aigc chat runs/sft                               # 和指令微调过的模型对话（--prompt "..." 只问一句）
    aigc pretrained list                             # 课程自带的参考模型；用 pretrained:名字 代替运行目录
    aigc generate pretrained:lm-gpt "今天" --top-p 0.9
    aigc generate pretrained:lm-gpt "今天" --watermark 我的密钥 > out.txt   # 加绿名单水印
    aigc detect 我的密钥 out.txt --model pretrained:lm-gpt                    # 检测水印：z、p、结论
    aigc mask 聊天记录.txt > 遮盖后.txt                   # 遮盖手机号、身份证号等个人信息
    torchrun --nproc_per_node=2 -m aigc_lib.cli train --task sentiment --model gru --out runs/gru-ddp
    aigc course run --profile gpu --inplace          # 按顺序执行所有章节，刷新提交的输出
    aigc course build --out site/                    # 离线网站：目录、每章一页、每章一套幻灯片

所有任务共用这几个子命令；任务本身（数据、模型、指标）在 ``aigc_lib.tasks`` 里，整门课的执行和网站在
``aigc_lib.course.run`` 和 ``aigc_lib.course.site`` 里。
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

COMMANDS = ("train", "evaluate", "predict", "generate", "chat", "mask", "detect", "pretrained", "course")
MAX_NEW_TOKENS = 10_000  # aigc generate 一次最多写这么多字：再多就该分几次写，而不是让终端卡住
COURSE_COMMANDS = ("run", "build")


RUN_HELP = "aigc train 的输出目录（或其中的 .pt 文件），或 pretrained:名字（课程自带的参考模型，见 aigc pretrained list）；必需"
DECODING_HELP = ("只用于拼音模型：greedy | fusion | rescoring（默认按模型 config 里记下的方式；"
                 "pretrained:pinyin 记着 rescoring，自己训练的模型只有 greedy）")


class UsageError(Exception):
    """命令行写错了（缺参数、参数值不合格、不认识的参数……）：打印一行中文说明和 --help 提示，退出码 2。"""

    def __init__(self, message: str, command: str = ""):
        super().__init__(message)
        self.command = command


# ---------------------------------------------------------------------------
# 参数值的检查：argparse 的 type= 回调，不合格时抛 ArgumentTypeError（中文），在加载任何数据之前
# ---------------------------------------------------------------------------


def _value(kind: type, flag: str, *, at_least=None, above=None, at_most=None, choices: tuple = ()):
    """``type=`` 回调：按类型、范围或可选值检查一个参数值（与尺寸字段用同一套检查；数值还必须是有限的）。"""
    from .tasks.sizes import SizeField

    return SizeField(flag.lstrip("-").replace("-", "_"), kind, choices, at_least, above, at_most=at_most).parse


def _device(text: str) -> str:
    """``--device`` 的 ``type=`` 回调：设备名写错、或本机没有这个设备时，在做任何事之前报错。"""
    from .core.runtime import device

    try:
        device(text)
    except (ValueError, RuntimeError) as error:
        raise argparse.ArgumentTypeError(f"参数 --device：{str(error).rstrip('。')}") from None
    return text


def _parser(flags_without_value: set) -> tuple[argparse.ArgumentParser, dict]:
    """建好整棵解析器，返回 ``(顶层解析器, {"train": 子解析器, ..., "course run": ...})``。

    只用 argparse 的公开功能：``exit_on_error=False`` 让出错变成 ``ArgumentError``，由 :func:`main` 用中文说明；
    分组标题用 ``add_argument_group`` 明写；用法行写在说明里（``usage=SUPPRESS``）；
    必需参数、子命令名和互斥的参数由 :func:`_check` 检查。
    """
    from .core.training import STRATEGIES
    from .tasks import TASKS

    parsers: dict[str, argparse.ArgumentParser] = {}

    def new(prog: str, usage: str, description: str, make=argparse.ArgumentParser, **kwargs):
        p = make(prog=prog, usage=argparse.SUPPRESS, description=f"用法：{usage}\n\n{description}",
                 formatter_class=argparse.RawDescriptionHelpFormatter, add_help=False, exit_on_error=False,
                 allow_abbrev=False, **kwargs)
        parsers[prog[len("aigc "):] if prog != "aigc" else ""] = p
        return p

    def options(p, title="选项"):
        group = p.add_argument_group(title)
        group.add_argument("-h", "--help", action="help", help="显示帮助并退出")
        plain = group.add_argument

        def add_argument(*names, **kwargs):  # 参数值的占位名默认用 METAVARS 里的中文（或 X），见下
            if kwargs.get("action") is None and "metavar" not in kwargs:
                kwargs["metavar"] = METAVARS.get(names[-1].lstrip("-").replace("-", "_"), "X")
            return plain(*names, **kwargs)

        group.add_argument = add_argument
        return group

    def flag(group, *names, **kwargs):  # 不带值的开关
        flags_without_value.update(names)
        group.add_argument(*names, action="store_true", **kwargs)

    task_lines = "\n".join(f"  {name:<12}{task.description}（模型：{', '.join(task.models)}）"
                           for name, task in TASKS.items())
    parser = new("aigc", "aigc {train,evaluate,predict,generate,chat,mask,detect,pretrained,course} ...",
                 "AIGC 课程的命令行工具：训练、评估、预测；运行整门课、生成离线网站。\n\n可用的任务：\n" + task_lines,
                 epilog="每个子命令都有自己的帮助，例如：aigc train --help\n"
                        "出错时默认只打印一两行中文说明；加 --debug 或设环境变量 AIGC_DEBUG=1 显示完整的 Python 堆栈。")
    group = options(parser)
    group.add_argument("--debug", action="store_true", help="出错时显示完整的 Python 堆栈（给开发者；也可设 AIGC_DEBUG=1，它同时打开模型的数值检查，见 aigc_lib.models.layers）")
    sub = parser.add_subparsers(title="子命令", dest="command", metavar="{train,evaluate,predict,generate,chat,mask,detect,pretrained,course}")

    def add(name, usage, help_text, description):
        p = new(f"aigc {name}", f"aigc {name} {usage}", description,
                make=lambda **kw: sub.add_parser(name, help=help_text, **kw))
        group = options(p)
        group.add_argument("--device", default=None, type=_device, help="cpu、cuda、cuda:1、mps；默认自动选择")
        return p, group

    train, group = add("train", "--task 任务 --model 模型 --out 目录 [选项] [尺寸]\n      aigc train --resume 目录",
                       "训练一个模型，把检查点和训练记录写进 --out 目录",
                       "训练一个模型。尺寸默认按运行档位（AIGC_PROFILE = smoke | cpu | gpu）选取，每一项都能覆盖。\n"
                       "例：aigc train --task sentiment --model gru --out runs/gru --epochs 3\n"
                       "被 Ctrl-C 打断（或收到 SIGTERM）的训练可以继续：aigc train --resume runs/gru\n"
                       "（任务、模型、尺寸、种子都从目录里的 last.pt 读，结果与一口气训练完相同）。")
    group.add_argument("--task", help=f"任务（必需）：{', '.join(TASKS)}",
                       type=_value(str, "--task", choices=tuple(TASKS)))
    group.add_argument("--model", help="模型家族（必需），见 aigc --help 的任务表")
    group.add_argument("--out", help="输出目录（必需）：best.pt、last.pt、history.json、summary.json")
    group.add_argument("--resume", metavar="目录", help="继续这个目录里被打断的训练（任务、模型、尺寸、种子、混合精度都从 last.pt 读出；只能再加 --device、--strategy、--quiet）")
    # --amp、--seed 的默认值是 None：这样 _check 能看出 --resume 时有没有写它们（不写时按 off、0 训练）
    group.add_argument("--amp", default=None, type=_value(str, "--amp", choices=("off", "bf16", "fp16", "auto")),
                       help="混合精度：off（默认）、bf16、fp16、auto（GPU 上推荐）")
    group.add_argument("--seed", type=_value(int, "--seed", at_least=0, at_most=2**32 - 1), default=None,
                       help="随机种子（默认 0）")
    group.add_argument("--strategy", default="ddp", type=_value(str, "--strategy", choices=STRATEGIES),
                       help="torchrun 多进程时：ddp（默认，每个进程一份完整模型）或 fsdp（参数、梯度、优化器状态切成 N 份）")
    flag(group, "--compile", help="用 torch.compile 编译模型（需要 C++ 编译器）")
    flag(group, "--quiet", help="不显示进度条")
    flag(group, "--overwrite", help="--out 里已有另一次训练的结果时覆盖它（默认拒绝，免得误删）")
    _add_size_flags(train, flags_without_value)

    evaluate, group = add("evaluate", "运行目录 [--split test] [--json]", "在某个数据划分上评估训练好的模型",
                          "评估 aigc train 写出的模型。\n例：aigc evaluate runs/gru --split test --json")
    group.add_argument("run", nargs="?", help=RUN_HELP)
    group.add_argument("--split", default="test", type=_value(str, "--split", choices=("train", "val", "test")),
                       help="数据划分：train、val、test（默认 test）")
    group.add_argument("--limit", type=_value(int, "--limit", at_least=1), default=None,
                       help="只用这份数据的前 N 个样本（顺序固定；默认全部）")
    group.add_argument("--decoding", help=DECODING_HELP)
    flag(group, "--json", help="只在标准输出打印一个 JSON 对象")

    predict, group = add("predict", "运行目录 [句子 ...] [--file 文件] [--json]", "用训练好的模型预测几句话或一个文件",
                         "预测。输入是命令行里的句子，或 --file 指定的文件（.txt 每行一句；.csv / .tsv / .jsonl 取\n"
                         "--text-col 那一列；编码自动识别）。\n"
                         "例：aigc predict runs/gru \"质量很好，物流也快\" \"物流太慢了\"\n"
                         "    aigc predict runs/gru --file 评论.csv --text-col 评论")
    group.add_argument("run", nargs="?", help=RUN_HELP)
    group.add_argument("texts", nargs="*", help="要预测的句子")
    group.add_argument("--file", help="要预测的文件：.txt 每行一句；.csv / .tsv / .jsonl 取 --text-col 这一列（列名那行不算）；"
                                      "- 表示从标准输入读，每行一句")
    group.add_argument("--text-col", default=None, help="--file 是表格（.csv / .tsv / .jsonl）时文本所在的列（默认：text）")
    group.add_argument("--decoding", help=DECODING_HELP)
    flag(group, "--json", help="每行打印一个 JSON 对象")

    gen, group = add("generate", "运行目录 [提示] [选项]", "用训练好的语言模型续写一段提示",
                     "用 aigc train --task lm 训练的模型生成文本（提示 + 续写）。默认按概率采样；--greedy 贪心；\n"
                     "--beam N 束搜索。空提示表示从一句话的开头写起。\n"
                     "例：aigc generate runs/gpt \"今天\" --max-new-tokens 60 --top-p 0.9 --seed 1")
    group.add_argument("run", nargs="?", help=RUN_HELP)
    group.add_argument("prompt", nargs="?", default="", help="提示（默认为空）")
    group.add_argument("--max-new-tokens", type=_value(int, "--max-new-tokens", at_least=1, at_most=MAX_NEW_TOKENS),
                       default=100, help=f"最多生成多少个字（BPE 模型是多少个词元；默认 100，最多 {MAX_NEW_TOKENS}）")
    flag(group, "--greedy", help="贪心：每步取概率最大的字")
    group.add_argument("--temperature", type=_value(float, "--temperature", above=0), default=None,
                       help="温度（默认 1.0；越小越保守）")
    group.add_argument("--top-k", type=_value(int, "--top-k", at_least=1), default=None, help="只在概率最大的 k 个字里采样")
    group.add_argument("--top-p", type=_value(float, "--top-p", above=0, at_most=1), default=None,
                       help="只在累计概率达到 p 的最小集合里采样")
    group.add_argument("--repetition-penalty", type=_value(float, "--repetition-penalty", above=0), default=1.0,
                       help="重复惩罚（> 1 压低出现过的字）")
    group.add_argument("--beam", type=_value(int, "--beam", at_least=1), default=None,
                       help="束宽：给了就用束搜索（确定的结果；--beam 1 等于贪心）")
    group.add_argument("--length-penalty", type=_value(float, "--length-penalty"), default=None,
                       help="束搜索的长度归一化指数 α（默认 1.0）")
    group.add_argument("--stop", default=None, help="停止符：生成到其中任何一个字就停，例如 \"。\"")
    group.add_argument("--seed", type=_value(int, "--seed", at_least=0, at_most=2**32 - 1), default=None,
                       help="采样的随机种子（给定时结果可复现）")
    flag(group, "--no-cache", help="不用 KV 缓存（每步重算全文，只为对照）")
    group.add_argument("--watermark", metavar="密钥", default=None,
                       help="加绿名单水印（Kirchenbauer et al., 2023），用这个密钥；aigc detect 用同一个密钥检测")
    group.add_argument("--watermark-delta", type=_value(float, "--watermark-delta", at_least=0), default=None,
                       help="水印强度：给绿名单加的 logit（默认 2.0；越大越好检测，也越改变文字）")
    group.add_argument("--watermark-gamma", type=_value(float, "--watermark-gamma", above=0, at_most=0.99),
                       default=None, help="绿名单占词表的比例（默认 0.25；检测时要用同一个值）")

    mask, group = add("mask", "[文件] [--names]", "遮盖文本里的个人信息（手机号、身份证号、银行卡号、邮箱、QQ 号）",
                      "遮盖个人信息：读文件（自动识别编码；不给文件就读标准输入），把手机号、身份证号（校验码对的）、\n"
                      "银行卡号（通过 Luhn 校验的）、邮箱、QQ 号换成 [手机号] 之类的标签，写到标准输出；\n"
                      "每一类遮盖了几处写到标准错误。规则见 aigc_lib/safety/pii.py。\n"
                      "例：aigc mask 聊天记录.txt > 遮盖后.txt\n    echo \"电话 13812345678\" | aigc mask")
    group.add_argument("file", nargs="?", default=None, help="文本文件（默认读标准输入）")
    flag(group, "--names", help="也遮盖人名、地名（用课程的命名实体识别模型 pretrained:ner，慢一些）")

    detect, group = add("detect", "密钥 文件 --model 运行目录 [--gamma G] [--alpha A] [--json]",
                        "检测一段文字里有没有 aigc generate --watermark 加的水印",
                        "检测水印：按字把文件变成编号，数落在绿名单里的字，打印 z、单侧 p 值（精确的二项分布尾巴）和结论。\n"
                        "--model 只用来取词表（把字变成编号），不运行模型：检测不需要模型本身。\n"
                        "它必须是生成时用的那个模型（或同一个词表）。\n"
                        "例：aigc detect 我的密钥 out.txt --model pretrained:lm-gpt")
    group.add_argument("key", nargs="?", default=None, help="生成时用的水印密钥（必需）")
    group.add_argument("file", nargs="?", default=None, help="要检测的文本文件（必需）")
    group.add_argument("--model", default=None, help="生成时用的语言模型：" + RUN_HELP)
    group.add_argument("--gamma", type=_value(float, "--gamma", above=0, at_most=0.99), default=0.25,
                       help="绿名单占词表的比例，要与生成时的 --watermark-gamma 相同（默认 0.25）")
    group.add_argument("--alpha", type=_value(float, "--alpha", above=0, at_most=1), default=0.01,
                       help="假阳性率上限：p 值不超过它就判为有水印（默认 0.01）")
    flag(group, "--json", help="只打印一个 JSON 对象")

    chat, group = add("chat", "运行目录 [--prompt 消息]", "和指令微调过的模型（aigc train --task sft）对话",
                      "在终端里和 aigc train --task sft 训练的模型多轮对话：输入一句、回车，它回答；\n"
                      "对话历史放不进上下文时从最早的一轮丢起，并会告诉你。Ctrl-D 或 Ctrl-C 退出。\n"
                      "例：aigc chat runs/sft\n    aigc chat runs/sft --prompt \"判断这条评论的情感：物流太慢了\"")
    group.add_argument("run", nargs="?", help=RUN_HELP)
    group.add_argument("--prompt", default=None, help="只问这一句，打印回答后退出（不进入对话）")
    group.add_argument("--max-new-tokens", type=_value(int, "--max-new-tokens", at_least=1, at_most=64),
                       default=48, help="每次回答最多多少个字（默认 48，最多 64：上下文只有 128 个位置）")

    zoo = new("aigc pretrained", "aigc pretrained list [--json]",
              "课程自带的参考模型（模型库）：装好就能用，不用训练。在 evaluate、predict、generate 里\n"
              "用 pretrained:名字 代替运行目录。\n"
              "例：aigc pretrained list\n    aigc evaluate pretrained:lm-gpt --split test --json",
              make=lambda **kw: sub.add_parser("pretrained", help="列出课程自带的参考模型", **kw))
    group = options(zoo)
    group.add_argument("action", nargs="?", default="list", help="list：列出模型库（默认；目前只有这一个动作）")
    flag(group, "--json", help="每行打印一个 JSON 对象")
    _add_course_parser(sub, new, options, flag)
    return parser, parsers


# 帮助里参数值的占位名：argparse 默认用大写的英文变量名（--device DEVICE），这里换成中文；没列出的用 X
METAVARS = {"run": "运行目录", "texts": "句子", "prompt": "提示", "key": "密钥", "file": "文件", "action": "动作",
            "device": "设备", "task": "任务", "model": "模型", "out": "目录", "src": "目录", "chapters": "目录",
            "amp": "模式", "strategy": "方式", "decoding": "方式", "split": "划分", "text_col": "列名", "stop": "字",
            "profile": "档位", "only": "编号", "seed": "N", "limit": "N", "max_new_tokens": "N", "beam": "N",
            "top_k": "K", "top_p": "P", "temperature": "T"}


def _size_flags() -> dict:
    """所有已登记任务的尺寸字段，按参数名合并：``{名字: (SizeField, [(任务, 模型, 说明), ...])}``。"""
    from .tasks import TASKS
    from .tasks.sizes import size_fields

    merged: dict = {}
    for task in TASKS.values():
        for model, spec in task.models.items():
            for f in size_fields(spec.sizes):
                first, users = merged.setdefault(f.name, (f, []))
                users.append((task, model, f.help))
                if f.choices and set(f.choices) - set(first.choices):  # 各任务可选值不同：命令行先接受并集，
                    merged[f.name] = (replace(first, choices=tuple(dict.fromkeys(first.choices + f.choices))), users)
    return merged  # 任务的 sizes() 再按自己的可选值检查


def _used_by(users) -> str:
    """``[(任务, 模型, 说明), ...]`` -> "[sentiment:rnn/lstm/gru、lm]"：整个任务都用时只写任务名。"""
    by_task: dict = {}
    for task, model, _ in users:
        by_task.setdefault(task.name, (task, []))[1].append(model)
    return "[" + "、".join(name if len(models) == len(task.models) else f"{name}:{'/'.join(models)}"
                          for name, (task, models) in by_task.items()) + "]"


def _size_overrides(args) -> dict:
    """命令行上写了的尺寸参数（没写的不在 args 里：default=SUPPRESS）。"""
    return {name: getattr(args, name) for name in _size_flags() if hasattr(args, name)}


def _add_size_flags(train: argparse.ArgumentParser, flags_without_value: set) -> None:
    """``aigc train`` 的尺寸参数：由各任务的尺寸 dataclass 生成。说明后面的方括号是用到它的任务（和模型）。"""
    group = train.add_argument_group("尺寸与超参数（不写就用当前档位的默认值；[ ] 里是用到它的任务，别的任务给了会报错）")
    for name, (f, users) in _size_flags().items():
        helps = list(dict.fromkeys(h for _, _, h in users))
        # 说明各任务相同时写一次；不同时每条说明后面跟着用它的任务
        text = f"{helps[0]} {_used_by(users)}" if len(helps) == 1 else "；".join(
            f"{h} {_used_by([u for u in users if u[2] == h])}" for h in helps)
        text = text.replace("%", "%%")
        if f.kind is bool:
            group.add_argument(f.flag, dest=name, action=argparse.BooleanOptionalAction,
                               default=argparse.SUPPRESS, help=text)
            flags_without_value.update({f.flag, "--no-" + f.flag[2:]})
        else:
            metavar = "{" + ",".join(f.choices) + "}" if f.choices else {int: "N", float: "X"}.get(f.kind, "TEXT")
            group.add_argument(f.flag, dest=name, type=f.parse, default=argparse.SUPPRESS, help=text,
                               metavar=metavar)


def _add_course_parser(sub, new, options, flag) -> None:
    """``aigc course run`` 与 ``aigc course build``（实现在 ``aigc_lib.course``）。"""
    course = new("aigc course", "aigc course {run,build} ...",
                 "整门课的两件事：按顺序执行所有章节（run），把执行过的章节生成离线网站和幻灯片（build）。\n"
                 "例：aigc course run --profile gpu --inplace\n    aigc course build --out site/",
                 make=lambda **kw: sub.add_parser("course", help="运行整门课（所有章节）或生成离线网站", **kw))
    options(course)
    actions = course.add_subparsers(title="子命令", dest="course_command", metavar="{run,build}")
    course.set_defaults(course_parser=course)  # 只写 aigc course 时打印这份帮助

    run = new("aigc course run", "aigc course run [--profile 档位] [--only 编号] [--inplace | --out 目录]",
              "按编号顺序执行章节（工作目录是章节所在的文件夹），显示进度、每章用时和汇总表。\n"
              "某个单元格出错时停下，说明是哪一章、哪个单元格、什么错误，退出码 1。\n"
              "例：aigc course run --profile smoke --only 00,01\n"
              "    aigc course run --profile gpu --inplace     # 在 GPU 机器上刷新提交的输出",
              make=lambda **kw: actions.add_parser("run", help="按编号顺序执行 chapters/ 里的所有 notebook", **kw))
    group = options(run)
    group.add_argument("--profile", type=_value(str, "--profile", choices=("smoke", "cpu", "gpu")), default=None,
                       help="运行档位：smoke、cpu、gpu（默认：环境变量 AIGC_PROFILE；没有时有 CUDA 用 gpu，否则 cpu）")
    group.add_argument("--only", default=None, help="只运行这些章节，逗号分隔的编号，例如 03,05")
    group.add_argument("--chapters", default="chapters", help="章节所在的目录（默认 chapters）")
    flag(group, "--inplace", help="把执行结果写回原 notebook（刷新提交的输出；不能与 --out 同用）")
    group.add_argument("--out", default=None, help="把执行过的 notebook 写到这个目录（默认 runs/course/<档位>/）")

    build = new("aigc course build", "aigc course build [--src 目录] [--out 目录] [--only 编号]",
                "生成一个不联网也能打开的网站：index.html 是目录，每章一页（带上一章、下一章），\n"
                "每章一套 reveal.js 幻灯片；公式和幻灯片用到的文件都复制进网站文件夹。notebook 本身不会被改动。\n"
                "例：aigc course build --out site/    然后用浏览器打开 site/index.html",
                make=lambda **kw: actions.add_parser(
                    "build", help="把执行过的章节生成离线网站（目录、章节页面、幻灯片）", **kw))
    group = options(build)
    group.add_argument("--src", default="chapters", help="执行过的章节所在的目录（默认 chapters）")
    group.add_argument("--out", default="site", help="网站输出目录（默认 site）")
    group.add_argument("--only", default=None, help="只生成这些章节，逗号分隔的编号，例如 00,02")


class Interrupted(Exception):
    """训练被 Ctrl-C 或 SIGTERM 打断：:func:`main` 说明怎样继续，退出码 130。"""

    def __init__(self, run_dir: str):
        super().__init__(run_dir)
        self.run_dir = run_dir


def _raise_keyboard_interrupt(signum, frame):
    raise KeyboardInterrupt  # SIGTERM（kill、作业调度器、容器停止）与 Ctrl-C 一样：保存进度后停下


def _train(args) -> int:
    import signal

    from .core.training import NonFiniteLossError
    from .tasks import TaskError, get_task, resume_run
    from .tasks.base import _is_main_process

    run_dir = args.resume if args.resume is not None else args.out
    # SIGTERM（kill、作业调度器）；Windows 上还有 Ctrl-Break（SIGBREAK）。关窗口、任务管理器结束进程收不到任何信号
    stops = [getattr(signal, name) for name in ("SIGTERM", "SIGBREAK") if hasattr(signal, name)]
    previous = {sig: signal.signal(sig, _raise_keyboard_interrupt) for sig in stops}
    try:
        if args.resume is not None:
            summary = resume_run(args.resume, device=args.device, progress=not args.quiet, strategy=args.strategy)
        else:
            summary = get_task(args.task).train(
                args.model, args.out, overrides=_size_overrides(args), device=args.device, amp=args.amp or "off",
                seed=args.seed or 0, compile=args.compile, progress=not args.quiet, overwrite=args.overwrite,
                strategy=args.strategy)
    except KeyboardInterrupt:  # 在 fit 之外被打断（准备数据时）：fit 里的中断由 fit 自己保存进度
        raise Interrupted(run_dir) from None
    except NonFiniteLossError as error:  # fit 的建议写的是 Python 参数；命令行用户要的是参数名
        again = "（重新训练时加 --overwrite）" if (Path(run_dir) / "last.pt").is_file() else ""
        raise TaskError(
            f"{error.where}的损失是 {error.value}，训练已停止。\n"
            f"可以试试：把学习率调小（--lr 改成现在的十分之一）、用 --amp off 关掉混合精度、换一个 --seed{again}；"
            "数据是你自己的，就检查里面有没有异常的行。") from None
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if summary.get("interrupted"):
        raise Interrupted(run_dir)
    if _is_main_process():
        best = summary["best"] or {}
        shown = ", ".join(f"{k} {v:.4f}" for k, v in best.items() if k.startswith("val_") and isinstance(v, float))
        print(f"完成：{summary['task']} / {summary['model']}，{summary['parameters']:,} 个参数，"
              f"训练 {summary['epochs_run']} 轮，用时 {summary['train_seconds']} 秒（{summary['device']}，"
              f"{summary['world_size']} 个进程）。最好的一轮（第 {best.get('epoch')} 轮）：{shown}。")
        print(f"结果在 {Path(run_dir)}/：best.pt、last.pt、history.json、summary.json")
    return 0


def _evaluate(args) -> int:
    from .zoo import load

    task, model, config = load(args.run, device=args.device)
    if args.decoding:
        config = task.with_decoding(config, args.decoding)
    result = task.evaluate(model, config, args.split, next(model.parameters()).device, limit=args.limit)
    if args.json:
        print(json.dumps(result, ensure_ascii=False))
    else:
        for key, value in result.items():
            print(f"{key:<12} {value:.4f}" if isinstance(value, float) else f"{key:<12} {value}")
    return 0


def _stdin_text() -> str:
    """标准输入的全部文字。管道送进来的字节与文件一样识别编码（Windows 上常是 GBK 或 UTF-16），认不出就报错；
    标准输入已经是文字时（例如在 notebook 里被换成了 StringIO）直接读。"""
    from .data.files import decode_text

    if hasattr(sys.stdin, "buffer"):
        return decode_text(sys.stdin.buffer.read(), name="标准输入")
    return sys.stdin.read()


def _predict(args) -> int:
    from .data.files import TABLE_SUFFIXES, load_texts
    from .tasks import TaskError
    from .zoo import load

    texts = list(args.texts)
    table = args.file not in (None, "-") and Path(args.file).suffix.lower() in TABLE_SUFFIXES
    if args.text_col is not None and not table:
        raise TaskError("--text-col 只用于表格文件（.csv / .tsv / .jsonl）：纯文本每行就是一句，不用指定列。")
    if args.file == "-":  # 管道：aigc predict runs/gru --file - < 评论.txt
        texts += [line.strip() for line in _stdin_text().splitlines() if line.strip()]
    elif args.file:
        texts += load_texts(args.file, args.text_col or "text", how_to_name="请用 --text-col 列名 指定文本所在的列。")
    if not texts:
        raise TaskError("没有要预测的内容：请在命令行里写句子，或用 --file 指定文本文件。")
    task, model, config = load(args.run, device=args.device)
    if args.decoding:
        config = task.with_decoding(config, args.decoding)
    for row in task.predict(model, config, texts, next(model.parameters()).device):
        if args.json:
            print(json.dumps(row, ensure_ascii=False))
        else:
            print(task.format_prediction(row))
    return 0


def _generate(args) -> int:
    from .tasks import TaskError
    from .zoo import load

    task, model, config = load(args.run, device=args.device)
    if not hasattr(task, "generate"):
        raise TaskError(f"任务 {task.name} 不能生成文本；aigc generate 只用于 aigc train --task lm 训练的模型。")
    watermark = None
    if args.watermark is not None:
        from .safety.watermark import Watermark

        try:
            given = {"gamma": args.watermark_gamma, "delta": args.watermark_delta}  # 没写的用 Watermark 的默认值
            watermark = Watermark(args.watermark, **{k: v for k, v in given.items() if v is not None})
        except ValueError as error:
            raise TaskError(str(error)) from None
    options = {"max_new_tokens": args.max_new_tokens, "strategy": "greedy" if args.greedy else "sample",
               "temperature": args.temperature, "top_k": args.top_k, "top_p": args.top_p,
               "repetition_penalty": args.repetition_penalty, "beam": args.beam,
               "length_penalty": args.length_penalty, "stop": args.stop, "seed": args.seed,
               "use_cache": not args.no_cache, "watermark": watermark}
    options = {k: v for k, v in options.items() if v is not None}  # 没写的参数用 task.generate 的默认值
    print(args.prompt + task.generate(model, config, args.prompt, options))
    return 0


def _mask(args) -> int:
    from .data.files import read_text
    from .safety.pii import TAGS, mask_pii

    text = read_text(args.file) if args.file is not None else _stdin_text()  # 认不出编码就报错，不把原文照抄出去
    ner = None
    if args.names:
        from .zoo import pretrained

        ner = pretrained("ner", device=args.device)
    masked, counts = mask_pii(text, names=args.names, ner=ner)
    sys.stdout.write(masked)
    kinds = [k for k in TAGS if args.names or k not in ("person", "place")]
    print("已遮盖：" + "，".join(f"{TAGS[k].strip('[]')} {counts.get(k, 0)}" for k in kinds)
          + f"（共 {sum(counts.values())} 处）", file=sys.stderr)
    return 0


def _detect(args) -> int:
    from .data.files import read_text
    from .data.text import Vocab
    from .safety.watermark import Watermark, detect_watermark
    from .tasks import TaskError
    from .zoo import load

    text = read_text(args.file).rstrip("\n")
    _, _, config = load(args.model, device="cpu")  # 只用它的词表
    if "vocab" not in config["artifacts"] or "separator" not in config["artifacts"]:
        raise TaskError(f"{args.model} 不是语言模型（aigc train --task lm）：检测水印要用生成时那个语言模型的词表。")
    vocab = Vocab.from_itos(config["artifacts"]["vocab"])
    try:
        watermark = Watermark(args.key, gamma=args.gamma)
    except ValueError as error:
        raise TaskError(str(error)) from None
    result = detect_watermark(vocab.encode(list(text)), len(vocab), watermark, alpha=args.alpha)
    if args.json:
        print(json.dumps({"z": result.z, "p_value": result.p_value, "green": result.green, "scored": result.scored,
                          "watermarked": result.watermarked, "alpha": args.alpha}, ensure_ascii=False))
        return 0
    verdict = "有水印" if result.watermarked else "没有检测到水印"
    print(f"z = {result.z:.2f}，p = {result.p_value:.2e}（{result.scored} 个字里 {result.green} 个在绿名单里，"
          f"没有水印时约 {args.gamma:.0%}）")
    print(f"结论：{verdict}（p <= {args.alpha} 判为有水印）" + ("" if result.scored >= 25 else "；文字太短，结论不可靠"))
    return 0


def _chat(args) -> int:
    from .tasks import TaskError
    from .zoo import load

    task, model, config = load(args.run, device=args.device)
    if not hasattr(task, "reply"):
        raise TaskError(f"任务 {task.name} 的模型不能对话；aigc chat 只用于 aigc train --task sft 训练的模型"
                        "（或 pretrained:chat）。")
    limit = config["artifacts"]["context_len"] - args.max_new_tokens - 8  # 8：角色标记和 <|end|> 的位置
    if args.prompt is not None:
        message = _shorten(args.prompt.strip(), limit)
        if not message:  # 只有空格也算空（交互时的空行同样不发送）
            raise TaskError("--prompt 是空的：请写上要问的话。")
        print(task.reply(model, config, [], message, args.max_new_tokens)[0])
        return 0
    try:  # Ctrl-D（输入结束）或 Ctrl-C 在任何时候按下都是正常退出：退出码 0，不打印堆栈
        _chat_loop(task, model, config, limit, args.max_new_tokens)
    except (EOFError, KeyboardInterrupt):
        print("\n再见。", file=sys.stderr)
    return 0


def _chat_loop(task, model, config: dict, limit: int, max_new_tokens: int) -> None:
    """一问一答地循环，直到输入结束（EOFError）或 Ctrl-C（KeyboardInterrupt），由调用者接住。"""
    print("开始对话（输入一句话后回车；Ctrl-D 或 Ctrl-C 退出）。", file=sys.stderr, flush=True)
    history: list = []
    while True:
        message = _shorten(input("你：").strip(), limit)
        if not message:
            print("（空行不会发送：请输入一句话；Ctrl-D 或 Ctrl-C 退出。）", file=sys.stderr)
            continue
        answer, dropped = task.reply(model, config, history, message, max_new_tokens)
        if dropped:
            print(f"（上下文只有 {config['artifacts']['context_len']} 个位置：已丢掉最早的 {dropped} 轮对话，"
                  "模型看不到它们了。）", file=sys.stderr)
            history = history[2 * dropped:]
        history += [("user", message), ("assistant", answer)]
        print(f"助手：{answer}", flush=True)


def _shorten(message: str, limit: int) -> str:
    """太长的消息只留前 ``limit`` 个字，并说一声（模型的上下文放不下更多）。"""
    if len(message) > limit:
        print(f"（消息有 {len(message)} 个字，太长了：只保留前 {limit} 个字。）", file=sys.stderr)
        return message[:limit]
    return message


def _pretrained(args) -> int:
    from .console import display_width, pad
    from .zoo import catalog

    rows = catalog()
    if args.json:
        for row in rows:
            print(json.dumps(row, ensure_ascii=False))
        return 0
    table = [("名字", "任务", "模型", "参数量", "大小（MB）", "测试集指标", "训练（分钟）")]
    table += [(r["name"], r["task"], r["model"], f"{r['parameters']:,}", f"{r['megabytes']:.2f}",
               f"{r['metric']} {r['test']:.4f}", f"{r['train_minutes']:.1f}") for r in rows]
    widths = [max(display_width(row[i]) for row in table) for i in range(len(table[0]))]
    for row in table:
        print("  ".join(pad(cell, w) for cell, w in zip(row, widths)).rstrip())
    print("用法：aigc evaluate pretrained:名字 --split test --json；训练命令与来历见 aigc_lib/zoo/models/名字.json")
    return 0


def _course(args) -> int:
    import time

    from .course.run import run_course
    from .course.site import build_site

    if args.course_command is None:
        args.course_parser.print_help()
        return 2
    if args.course_command == "run":
        return run_course(args.chapters, profile=args.profile, only=args.only, inplace=args.inplace, out=args.out)
    start = time.perf_counter()
    written = build_site(args.src, args.out, only=args.only)
    chapters = (len(written) - 1) // 2
    seconds = time.perf_counter() - start
    print(f"网站已生成：{written[0]}（{chapters} 章，每章一页和一套幻灯片，用时 {seconds:.1f} 秒）。")
    print(f"用浏览器打开 {written[0]} 即可，不需要联网；幻灯片是 {Path(args.out) / '<章节>.slides.html'}。")
    return 0


def _command_of(argv: list[str]) -> str:
    """出错时指向哪个子命令的帮助："train"、"course run"，或 ""（顶层）。"""
    words = [a for a in argv if not a.startswith("-")]
    if not words or words[0] not in COMMANDS:
        return ""
    if words[0] == "course" and len(words) > 1 and words[1] in COURSE_COMMANDS:
        return "course run" if words[1] == "run" else "course build"
    return words[0]


def _check_command_names(argv: list[str]) -> None:
    """子命令名由我们先检查（argparse 的英文提示不出现）。"""
    first = next((a for a in argv if not a.startswith("-")), None)
    if argv and not argv[0].startswith("-") and first not in COMMANDS:
        raise UsageError(f"没有子命令 {first!r}，可选：{', '.join(COMMANDS)}")
    if first == "course":
        rest = argv[argv.index("course") + 1:]
        if rest and not rest[0].startswith("-") and rest[0] not in COURSE_COMMANDS:
            raise UsageError(f"没有子命令 {rest[0]!r}，可选：{', '.join(COURSE_COMMANDS)}", "course")


def _check(args, command: str) -> None:
    """argparse 之外由我们检查的：必需的参数、只能用一个的参数。"""
    required = {"train": ("task", "model", "out"), "evaluate": ("run",), "predict": ("run",), "generate": ("run",),
                "chat": ("run",), "detect": ("key", "file", "model")}
    shown = {"run": "运行目录（或 pretrained:名字）", "key": "密钥", "file": "文件"}  # 位置参数在用法里的中文名
    missing = [("--" + name if command == "train" or name == "model" else shown.get(name, name))
               for name in required.get(command, ()) if getattr(args, name) is None]
    if command == "train" and args.resume is not None:
        given = [flag for flag, value in (("--task", args.task), ("--model", args.model), ("--out", args.out),
                                          ("--amp", args.amp), ("--seed", args.seed)) if value is not None]
        given += [flag for flag, on in (("--compile", args.compile), ("--overwrite", args.overwrite)) if on]
        given += ["--" + name.replace("_", "-") for name in _size_overrides(args)]
        if given:
            raise UsageError(f"参数 --resume 不能和 {'、'.join(given)} 一起用：任务、模型、尺寸、种子和混合精度都从"
                             f"目录里的 last.pt 读出（只有 --device、--strategy、--quiet 可以一起写）", command)
        return
    if missing:
        raise UsageError(f"缺少必需的参数：{'、'.join(missing)}", command)
    if command == "pretrained" and args.action != "list":
        raise UsageError(f"aigc pretrained 只有 list 一个动作，收到 {args.action!r}", command)
    if command == "generate":
        _check_generate(args)
    if command == "course run" and args.inplace and args.out is not None:
        raise UsageError("参数 --inplace 和 --out 只能用一个", command)


def _check_generate(args) -> None:
    """aigc generate 里互相矛盾、或者写了也不起作用的参数：说出来，而不是悄悄忽略。这几个参数的默认值是 None
    （没写），真正的默认值在 ``task.generate`` 和 ``Watermark`` 里，这样才看得出用户写了哪些。"""
    if args.greedy and args.beam is not None:
        raise UsageError("--greedy 和 --beam 只能选一个（--beam 1 就是贪心）", "generate")
    sampling = [flag for flag, value in (("--temperature", args.temperature), ("--top-k", args.top_k),
                                         ("--top-p", args.top_p)) if value is not None]
    if sampling and (args.greedy or args.beam is not None):
        other = "--greedy" if args.greedy else "--beam"
        raise UsageError(f"{'、'.join(sampling)} 只用于采样（默认的解码方式），和 {other} 一起写不起作用：去掉其中一边", "generate")
    if args.length_penalty is not None and args.beam is None:
        raise UsageError("--length-penalty 只用于束搜索：请同时写 --beam N", "generate")
    unused = [flag for flag, value in (("--watermark-delta", args.watermark_delta),
                                       ("--watermark-gamma", args.watermark_gamma)) if value is not None]
    if unused and args.watermark is None:
        raise UsageError(f"{'、'.join(unused)} 只在加水印时有用：请同时写 --watermark 密钥", "generate")


def _parse(argv: list[str]):
    """解析命令行；写错时抛 :class:`UsageError`（中文说明），不让 argparse 打印英文并退出。"""
    command = _command_of(argv)
    _check_command_names(argv)
    flags_without_value: set = set()
    parser, parsers = _parser(flags_without_value)
    try:
        args, unknown = parser.parse_known_args(argv)
    except argparse.ArgumentError as error:
        if isinstance(error.__context__, argparse.ArgumentTypeError):
            message = str(error.__context__)  # 我们的 type= 回调写的中文
        elif error.argument_name in flags_without_value:
            message = f"参数 {error.argument_name} 不带值"
        else:
            message = f"参数 {error.argument_name} 后面要跟一个值"
        raise UsageError(message, command) from None
    # 选项写在句子（提示）前面时，argparse 把后面的句子留在 unknown 里：它们仍是句子，不是错误
    words = [a for a in unknown if not a.startswith("-")]
    if words and command == "predict":
        args.texts += words
        unknown = [a for a in unknown if a.startswith("-")]
    elif len(words) == 1 and command == "generate" and args.run is not None and not args.prompt:
        args.prompt = words[0]
        unknown = [a for a in unknown if a.startswith("-")]
    if unknown and command == "generate" and words:
        raise UsageError(f"只能给一段提示，多出来的是：{' '.join(words)}。提示里有空格时请用引号括起来，"
                         "例如 aigc generate runs/gpt \"今天 天气\"", command)
    if unknown:
        raise UsageError(f"不认识的参数：{' '.join(unknown)}", command)
    if args.command is None:
        parser.print_help()
        return None
    _check(args, command)
    return args


DEBUG_ENV = "AIGC_DEBUG"  # AIGC_DEBUG=1 与 aigc --debug 相同：出错时显示完整的堆栈


def _user_errors() -> tuple:
    """用户能自己改正的错误：参数、文件、检查点、环境变量、NaN……它们只打印一两行中文说明
    （内存不够也是，由 :func:`_out_of_memory` 认出来）。"""
    from .core.checkpoint import CheckpointError, CheckpointMismatchError
    from .core.runtime import ProfileError
    from .course.run import CourseError
    from .data.files import DataFileError
    from .tasks import TaskError

    return (TaskError, CourseError, DataFileError, ProfileError, CheckpointError, CheckpointMismatchError,
            OSError, UnicodeDecodeError)


def _out_of_memory(error: BaseException) -> bool:
    """显存或内存不够：GPU 上是 torch.OutOfMemoryError，Python 自己的是 MemoryError；CPU 上 PyTorch 抛的是
    一个普通的 RuntimeError（"DefaultCPUAllocator: can't allocate memory"），只能看消息认出来。"""
    import torch

    return (isinstance(error, (torch.OutOfMemoryError, MemoryError))
            or isinstance(error, RuntimeError) and "can't allocate memory" in str(error))


def _describe(error: BaseException) -> str:
    """一个用户错误 -> 一两行中文。操作系统的错误（权限、磁盘满）自己带的是英文，补上文件名和该做什么。"""
    if _out_of_memory(error):
        return ("显存（或内存）不够：把 --batch-size 调小；训练时也可以把模型的宽度调小。在 GPU 上还可以加 --amp auto"
                "（混合精度，激活少占一些内存）。")
    if isinstance(error, OSError) and not isinstance(error, (FileNotFoundError, IsADirectoryError)) \
            and error.strerror:
        where = f" {error.filename}" if error.filename else ""
        return f"读写文件{where}失败（{error.strerror}）：请检查路径、权限和剩余的磁盘空间。"
    return str(error)


def _utf8_output() -> None:
    """标准输出和标准错误一律写 UTF-8（以后的 Python 默认也这样，见 PEP 686）。Windows 上输出被重定向到文件
    或管道时，Python 本来按系统的 ANSI 编码（简体中文是 GBK）写，遇到 emoji 等 GBK 里没有的字就出错退出。
    控制台本身不受影响；标准输入不动（管道送进来的 GBK 文字照常读）。"""
    for stream in (sys.stdout, sys.stderr):
        encoding = (getattr(stream, "encoding", None) or "").lower().replace("-", "").replace("_", "")
        if encoding != "utf8" and hasattr(stream, "reconfigure"):
            stream.reconfigure(encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    """``aigc`` 的入口。用户能自己改正的错误只打印一两行中文说明，退出码 2；程序自己的错误（bug）
    打印一行说明和 --debug 的提示，退出码 1。``--debug``（写在任何位置）或环境变量 ``AIGC_DEBUG=1``
    时不拦截，显示完整的堆栈。"""
    import os

    _utf8_output()
    argv = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in argv or os.environ.get(DEBUG_ENV, "").strip() not in ("", "0")
    argv = [a for a in argv if a != "--debug"]
    command = "aigc"
    try:
        try:
            args = _parse(argv)
        except UsageError as error:
            where = f"aigc {error.command}".strip()
            print(f"{where}：错误：{error}。用 {where} --help 查看用法。", file=sys.stderr)
            return 2
        if args is None:
            return 2
        command = f"aigc {args.command}" + (f" {args.course_command}" if getattr(args, "course_command", None) else "")
        commands = {"train": _train, "evaluate": _evaluate, "predict": _predict, "generate": _generate,
                    "chat": _chat, "mask": _mask, "detect": _detect, "pretrained": _pretrained, "course": _course}
        return commands[args.command](args)
    except (KeyboardInterrupt, Interrupted) as error:
        run_dir = error.run_dir if isinstance(error, Interrupted) else None
        if run_dir is not None and (Path(run_dir) / "last.pt").is_file():
            print(f"已中断，可用 aigc train --resume {run_dir} 继续", file=sys.stderr)
        elif run_dir is not None:
            print("已中断，还没有保存任何检查点：重新运行同一条命令（加 --overwrite）即可。", file=sys.stderr)
        else:
            print("已中断。", file=sys.stderr)
        return 130
    except BrokenPipeError:  # 输出接给了 head 之类的命令，它读够了就关掉管道：像 Unix 工具一样安静地停下
        try:  # 退出时 Python 还会刷新标准输出、再报一次同样的错：把它接到空设备上
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return 1
    except Exception as error:
        if debug:
            raise
        if isinstance(error, _user_errors()) or _out_of_memory(error):
            print(f"{command}：错误：{_describe(error)}", file=sys.stderr)
            return 2
        print(f"{command}：内部错误 {type(error).__name__}：{str(error).splitlines()[0] if str(error) else ''}\n"
              f"这多半是程序的问题，不是你的操作。加 --debug（或设环境变量 {DEBUG_ENV}=1）重新运行可看到完整的堆栈，"
              "报告问题时请附上它。", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
