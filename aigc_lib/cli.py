"""``aigc`` 命令：在终端里训练、评估、预测，也能在 torchrun 下多进程训练。

    aigc train --task sentiment --model gru --out runs/gru
    aigc evaluate runs/gru --split test --json
    aigc predict runs/gru "这本书很好看" "物流太慢了"
    aigc generate runs/gpt "今天" --max-new-tokens 60 --top-p 0.9 --seed 1
    torchrun --nproc_per_node=2 -m aigc_lib.cli train --task sentiment --model gru --out runs/gru-ddp
    aigc course run --profile gpu --inplace          # 按顺序执行所有章节，刷新提交的输出
    aigc course build --out site/                    # 离线网站：目录、每章一页、每章一套幻灯片

所有任务共用这几个子命令；任务本身（数据、模型、指标）在 ``aigc_lib.tasks`` 里，整门课的执行和网站在
``aigc_lib.course`` 和 ``aigc_lib.course_site`` 里。
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

# 可以覆盖的尺寸与超参数：命令行参数名 -> (类型, 说明)。任务的默认值表里没有的键会被拒绝。
SIZE_FLAGS = {
    "epochs": (int, "训练轮数"),
    "batch_size": (int, "每批样本数"),
    "lr": (float, "峰值学习率（AdamW，先预热再余弦衰减）"),
    "weight_decay": (float, "AdamW 的权重衰减"),
    "embed_dim": (int, "词向量维数（RNN 家族）"),
    "hidden_dim": (int, "隐藏层宽度（RNN 家族）"),
    "d_model": (int, "模型宽度（Transformer）"),
    "heads": (int, "注意力头数（Transformer）"),
    "layers": (int, "层数（seq2seq 里是编码器的层数）"),
    "decoder_layers": (int, "解码器层数（seq2seq）"),
    "dropout": (float, "dropout 比例"),
    "max_len": (int, "每条文本最多保留的 token 数"),
    "vocab_size": (int, "词表大小上限（含 <pad>、<unk>）"),
    "min_freq": (int, "进入词表的最低词频"),
    "train_limit": (int, "只用前 N 条训练数据（0 表示全部）"),
    "tokens": (str, "切分方式：word（jieba 分词）或 char（按字）"),
    "pretrain_epochs": (int, "先在训练文本上训练几轮 skip-gram 词向量来初始化嵌入层（0 表示随机初始化）"),
    "pooling": (str, "把每个位置的输出汇总成一个向量：last、mean 或 max"),
    "block_size": (int, "语言模型每个训练片段的长度（GPT 的上下文长度）"),
    "samples_per_epoch": (int, "语言模型每轮随机抽多少个训练片段（0 表示全部）"),
    "val_blocks": (int, "语言模型每轮验证用多少个片段（0 表示全部）"),
}


class ChineseHelpFormatter(argparse.RawDescriptionHelpFormatter):
    """argparse 自带的几处英文提示换成中文。"""

    def add_usage(self, usage, actions, groups, prefix=None):
        # 子命令的 prog 也是用它算出来的（那时 prefix=""），只替换默认的 "usage: "，免得出现两次"用法："
        return super().add_usage(usage, actions, groups, prefix="用法：" if prefix is None else prefix)


# argparse 自带的出错提示（英文）-> 中文。没有列出的提示原样显示。
_ERRORS = [
    (r"the following arguments are required: (.+)", "缺少必需的参数：{0}"),
    (r"argument \{.*\}: invalid choice: (.+?) \(choose from (.+)\)", "没有子命令 {0}，可选：{1}"),
    (r"argument (\S+): invalid choice: (.+?) \(choose from (.+)\)", "参数 {0} 的值 {1} 无效，可选：{2}"),
    (r"argument (\S+): not allowed with argument (\S+)", "参数 {0} 和 {1} 只能用一个"),
    (r"argument (\S+): invalid int value: (.+)", "参数 {0} 要一个整数，收到 {1}"),
    (r"argument (\S+): invalid float value: (.+)", "参数 {0} 要一个数，收到 {1}"),
    (r"argument (\S+): expected one argument", "参数 {0} 后面要跟一个值"),
    (r"unrecognized arguments: (.+)", "不认识的参数：{0}"),
]


class ChineseArgumentParser(argparse.ArgumentParser):
    """参数写错时用中文说明错在哪里，并提示用 --help 查看用法（子命令的解析器也是这个类）。"""

    def error(self, message: str):
        for pattern, template in _ERRORS:
            match = re.fullmatch(pattern, message)
            if match:
                message = template.format(*match.groups())
                break
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}：错误：{message}。用 {self.prog} --help 查看用法。\n")


def _parser() -> argparse.ArgumentParser:
    from .tasks import TASKS

    task_lines = "\n".join(f"  {name:<12}{task.description}（模型：{', '.join(task.models)}）"
                           for name, task in TASKS.items())
    parser = ChineseArgumentParser(
        prog="aigc", formatter_class=ChineseHelpFormatter, add_help=False,
        description="AIGC 课程的命令行工具：训练、评估、预测；运行整门课、生成离线网站。\n\n"
                    "可用的任务：\n" + task_lines,
        epilog="每个子命令都有自己的帮助，例如：aigc train --help",
    )
    parser.add_argument("-h", "--help", action="help", help="显示帮助并退出")
    parser._positionals.title = "子命令"
    parser._optionals.title = "选项"
    sub = parser.add_subparsers(dest="command", metavar="{train,evaluate,predict,generate,course}")

    def add(name, help_text, description):
        p = sub.add_parser(name, help=help_text, description=description, add_help=False,
                           formatter_class=ChineseHelpFormatter)
        p.add_argument("-h", "--help", action="help", help="显示帮助并退出")
        p._positionals.title = "位置参数"
        p._optionals.title = "选项"
        p.add_argument("--device", default=None, help="cpu、cuda、cuda:1、mps；默认自动选择")
        return p

    train = add("train", "训练一个模型，把检查点和训练记录写进 --out 目录",
                "训练一个模型。尺寸默认按运行档位（AIGC_PROFILE = smoke | cpu | gpu）选取，每一项都能覆盖。\n"
                "例：aigc train --task sentiment --model gru --out runs/gru --epochs 3")
    train.add_argument("--task", required=True, help=f"任务：{', '.join(TASKS)}")
    train.add_argument("--model", required=True, help="模型家族，见 aigc --help 的任务表")
    train.add_argument("--out", required=True, help="输出目录（best.pt、last.pt、history.json、summary.json）")
    train.add_argument("--amp", default="off", choices=["off", "bf16", "fp16", "auto"],
                       help="混合精度：off（默认）、bf16、fp16、auto（GPU 上推荐）")
    train.add_argument("--seed", type=int, default=0, help="随机种子（默认 0）")
    train.add_argument("--compile", action="store_true", help="用 torch.compile 编译模型（需要 C++ 编译器）")
    train.add_argument("--quiet", action="store_true", help="不显示进度条")
    sizes = train.add_argument_group("尺寸与超参数（不写就用当前档位的默认值）")
    for key, (kind, help_text) in SIZE_FLAGS.items():
        sizes.add_argument("--" + key.replace("_", "-"), dest=key, type=kind, default=None, help=help_text)
    sizes.add_argument("--bidirectional", dest="bidirectional", action=argparse.BooleanOptionalAction,
                       default=None, help="双向 RNN（--no-bidirectional 关闭）")

    evaluate = add("evaluate", "在某个数据划分上评估训练好的模型",
                   "评估 aigc train 写出的模型。\n例：aigc evaluate runs/gru --split test --json")
    evaluate.add_argument("run", help="aigc train 的输出目录（或其中的 .pt 文件）")
    evaluate.add_argument("--split", default="test", choices=["train", "val", "test"], help="数据划分（默认 test）")
    evaluate.add_argument("--json", action="store_true", help="只在标准输出打印一个 JSON 对象")

    predict = add("predict", "用训练好的模型预测几句话或一个文件",
                  "预测。输入是命令行里的句子，或 --file 指定的文本文件（每行一句，自动识别编码）。\n"
                  "例：aigc predict runs/gru \"这本书很好看\" \"物流太慢了\"")
    predict.add_argument("run", help="aigc train 的输出目录（或其中的 .pt 文件）")
    predict.add_argument("texts", nargs="*", help="要预测的句子")
    predict.add_argument("--file", help="文本文件，每行一句")
    predict.add_argument("--json", action="store_true", help="每行打印一个 JSON 对象")

    gen = add("generate", "用训练好的语言模型续写一段提示",
              "用 aigc train --task lm 训练的模型生成文本（提示 + 续写）。默认按概率采样；--greedy 贪心；\n"
              "--beam N 束搜索。空提示表示从一句话的开头写起。\n"
              "例：aigc generate runs/gpt \"今天\" --max-new-tokens 60 --top-p 0.9 --seed 1")
    gen.add_argument("run", help="aigc train 的输出目录（或其中的 .pt 文件）")
    gen.add_argument("prompt", nargs="?", default="", help="提示（默认为空）")
    gen.add_argument("--max-new-tokens", type=int, default=100, help="最多生成多少个字（默认 100）")
    gen.add_argument("--greedy", action="store_true", help="贪心：每步取概率最大的字")
    gen.add_argument("--temperature", type=float, default=1.0, help="温度（默认 1.0；越小越保守）")
    gen.add_argument("--top-k", type=int, default=None, help="只在概率最大的 k 个字里采样")
    gen.add_argument("--top-p", type=float, default=None, help="只在累计概率达到 p 的最小集合里采样")
    gen.add_argument("--repetition-penalty", type=float, default=1.0, help="重复惩罚（> 1 压低出现过的字）")
    gen.add_argument("--beam", type=int, default=None, help="束宽：给了就用束搜索（确定的结果；--beam 1 等于贪心）")
    gen.add_argument("--length-penalty", type=float, default=1.0, help="束搜索的长度归一化指数 α")
    gen.add_argument("--stop", default=None, help="停止符：生成到其中任何一个字就停，例如 \"。\"")
    gen.add_argument("--seed", type=int, default=None, help="采样的随机种子（给定时结果可复现）")
    gen.add_argument("--no-cache", action="store_true", help="不用 KV 缓存（每步重算全文，只为对照）")
    _add_course_parser(sub)
    return parser


def _add_course_parser(sub) -> None:
    """``aigc course run`` 与 ``aigc course build``（实现在 ``aigc_lib.course``）。"""
    def titled(p):
        p.add_argument("-h", "--help", action="help", help="显示帮助并退出")
        p._positionals.title = "位置参数"
        p._optionals.title = "选项"
        return p

    course = titled(sub.add_parser(
        "course", help="运行整门课（所有章节）或生成离线网站", add_help=False, formatter_class=ChineseHelpFormatter,
        description="整门课的两件事：按顺序执行所有章节（run），把执行过的章节生成离线网站和幻灯片（build）。\n"
                    "例：aigc course run --profile gpu --inplace\n    aigc course build --out site/"))
    actions = course.add_subparsers(dest="course_command", metavar="{run,build}")
    course.set_defaults(course_parser=course)  # 只写 aigc course 时打印这份帮助

    run = titled(actions.add_parser(
        "run", help="按编号顺序执行 chapters/ 里的所有 notebook", add_help=False, formatter_class=ChineseHelpFormatter,
        description="按编号顺序执行章节（工作目录是章节所在的文件夹），显示进度、每章用时和汇总表。\n"
                    "某个单元格出错时停下，说明是哪一章、哪个单元格、什么错误，退出码 1。\n"
                    "例：aigc course run --profile smoke --only 00,01\n"
                    "    aigc course run --profile gpu --inplace     # 在 GPU 机器上刷新提交的输出"))
    run.add_argument("--profile", choices=["smoke", "cpu", "gpu"], default=None,
                     help="运行档位（默认：环境变量 AIGC_PROFILE；没有时有 CUDA 用 gpu，否则 cpu）")
    run.add_argument("--only", default=None, help="只运行这些章节，逗号分隔的编号，例如 03,05")
    run.add_argument("--chapters", default="chapters", help="章节所在的目录（默认 chapters）")
    where = run.add_mutually_exclusive_group()
    where.add_argument("--inplace", action="store_true", help="把执行结果写回原 notebook（刷新提交的输出）")
    where.add_argument("--out", default=None, help="把执行过的 notebook 写到这个目录（默认 runs/course/<档位>/）")

    build = titled(actions.add_parser(
        "build", help="把执行过的章节生成离线网站（目录、章节页面、幻灯片）", add_help=False,
        formatter_class=ChineseHelpFormatter,
        description="生成一个不联网也能打开的网站：index.html 是目录，每章一页（带上一章、下一章），\n"
                    "每章一套 reveal.js 幻灯片；公式和幻灯片用到的文件都复制进网站文件夹。notebook 本身不会被改动。\n"
                    "例：aigc course build --out site/    然后用浏览器打开 site/index.html"))
    build.add_argument("--src", default="chapters", help="执行过的章节所在的目录（默认 chapters）")
    build.add_argument("--out", default="site", help="网站输出目录（默认 site）")
    build.add_argument("--only", default=None, help="只生成这些章节，逗号分隔的编号，例如 00,02")


def _train(args) -> int:
    from .tasks import get_task

    task = get_task(args.task)
    overrides = {key: getattr(args, key) for key in [*SIZE_FLAGS, "bidirectional"]}
    summary = task.train(args.model, args.out, overrides=overrides, device=args.device, amp=args.amp,
                         seed=args.seed, compile=args.compile, progress=not args.quiet)
    from .tasks.base import _is_main_process

    if _is_main_process():
        best = summary["best"] or {}
        shown = ", ".join(f"{k} {v:.4f}" for k, v in best.items() if k.startswith("val_") and isinstance(v, float))
        print(f"完成：{summary['task']} / {summary['model']}，{summary['parameters']:,} 个参数，"
              f"训练 {summary['epochs_run']} 轮，用时 {summary['train_seconds']} 秒（{summary['device']}，"
              f"{summary['world_size']} 个进程）。最好的一轮（第 {best.get('epoch')} 轮）：{shown}。")
        print(f"结果在 {Path(args.out)}/：best.pt、last.pt、history.json、summary.json")
    return 0


def _evaluate(args) -> int:
    from .tasks import load_run

    task, model, config = load_run(args.run, device=args.device)
    result = task.evaluate(model, config, args.split, next(model.parameters()).device)
    if args.json:
        print(json.dumps(result, ensure_ascii=False))
    else:
        for key, value in result.items():
            print(f"{key:<12} {value:.4f}" if isinstance(value, float) else f"{key:<12} {value}")
    return 0


def _predict(args) -> int:
    from .corpora import read_text
    from .tasks import TaskError, load_run

    texts = list(args.texts)
    if args.file:
        texts += [line.strip() for line in read_text(args.file).splitlines() if line.strip()]
    if not texts:
        raise TaskError("没有要预测的内容：请在命令行里写句子，或用 --file 指定文本文件。")
    task, model, config = load_run(args.run, device=args.device)
    for row in task.predict(model, config, texts, next(model.parameters()).device):
        if args.json:
            print(json.dumps(row, ensure_ascii=False))
        else:
            print(task.format_prediction(row))
    return 0


def _generate(args) -> int:
    from .tasks import TaskError, load_run

    task, model, config = load_run(args.run, device=args.device)
    if not hasattr(task, "generate"):
        raise TaskError(f"任务 {task.name} 不能生成文本；aigc generate 只用于 aigc train --task lm 训练的模型。")
    options = {"max_new_tokens": args.max_new_tokens, "strategy": "greedy" if args.greedy else "sample",
               "temperature": args.temperature, "top_k": args.top_k, "top_p": args.top_p,
               "repetition_penalty": args.repetition_penalty, "beam": args.beam,
               "length_penalty": args.length_penalty, "stop": args.stop, "seed": args.seed,
               "use_cache": not args.no_cache}
    print(args.prompt + task.generate(model, config, args.prompt, options))
    return 0


def _course(args) -> int:
    import time

    from .course import run_course
    from .course_site import build_site

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


def main(argv: list[str] | None = None) -> int:
    """``aigc`` 的入口。用户能自己改正的错误只打印一行中文说明，退出码 2。"""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    from .checkpoint import CheckpointMismatchError
    from .course import CourseError
    from .tasks import TaskError

    commands = {"train": _train, "evaluate": _evaluate, "predict": _predict, "generate": _generate, "course": _course}
    try:
        return commands[args.command](args)
    except (TaskError, CourseError, FileNotFoundError, CheckpointMismatchError, UnicodeDecodeError) as error:
        print(f"aigc {args.command}: 错误：{error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("已中断。", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
