"""课程承诺的质量门槛：用 ``aigc train`` 在当前档位下训练每个任务，在测试集上打分，与门槛对照。

    python benchmarks/quality_bars.py                              # 档位按 AIGC_PROFILE（没设时有 GPU 用 gpu，否则 cpu）
    python benchmarks/quality_bars.py --profile gpu --budget 540   # 540 秒用完就不再开始新的一项
    python benchmarks/quality_bars.py --only sentiment-gru,pinyin --out runs/bars

每一项就是学习者在终端里敲的两条命令，各开一个子进程：
``aigc train --task T --model M --out <out>/<项目>`` 和 ``aigc evaluate <out>/<项目> --split test --json``。
门槛是课程设计里写下的要求（cpu 档位 2 核 CPU、gpu 档位一块 GPU）；smoke 档位没有门槛，只看命令能不能跑通。

- 顺序就是下面 JOBS 的顺序（最重要的在前）。``--budget`` 秒用完后不再开始新的一项，已经开始的会跑完。
- 每完成一项就把全部结果重写进 ``<out>/bars.json``，中途被打断也不会丢掉已经测到的数。
- 最后打印一张表；最后一行是 ``passed <达标的门槛数>/<测到的门槛数>``。有门槛没达到时退出码为 1。
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from aigc_lib.core.runtime import profile as current_profile
from aigc_lib.tasks import get_task
from zh_args import ChineseArgumentParser

# (项目名, --task, --model)：按重要程度排列；比较的指标是任务自己的 Task.metric
JOBS = [
    ("sentiment-gru", "sentiment", "gru"),
    ("pinyin", "pinyin", "seq2seq"),
    ("segment", "segment", "bilstm-crf"),
    ("ner", "ner", "bilstm-crf"),
    ("lm-gpt", "lm", "gpt"),
    ("lm-lstm", "lm", "lstm"),
    ("sentiment-lstm", "sentiment", "lstm"),
]

# 门槛：(说明, 用到的项目, 从这些项目的指标算出要比较的值, 达标条件)
BARS = {
    "cpu": [
        ("情感分类 GRU 准确率 ≥ 0.84", ["sentiment-gru"], lambda r: r["sentiment-gru"], lambda v: v >= 0.84),
        ("情感分类 LSTM 准确率 ≥ 0.84", ["sentiment-lstm"], lambda r: r["sentiment-lstm"], lambda v: v >= 0.84),
        ("分词 F1 ≥ 0.92", ["segment"], lambda r: r["segment"], lambda v: v >= 0.92),
        ("命名实体 F1 ≥ 0.85", ["ner"], lambda r: r["ner"], lambda v: v >= 0.85),
        ("拼音 -> 汉字 字准确率 ≥ 0.80", ["pinyin"], lambda r: r["pinyin"], lambda v: v >= 0.80),
    ],
    "gpu": [
        ("情感分类 最好的家族 准确率 ≥ 0.88", ["sentiment-gru"],
         lambda r: max(v for k, v in r.items() if k.startswith("sentiment-")), lambda v: v >= 0.88),
        ("拼音 -> 汉字 字准确率 ≥ 0.93", ["pinyin"], lambda r: r["pinyin"], lambda v: v >= 0.93),
        ("分词 F1 ≥ 0.95", ["segment"], lambda r: r["segment"], lambda v: v >= 0.95),
        ("命名实体 F1 ≥ 0.90", ["ner"], lambda r: r["ner"], lambda v: v >= 0.90),
        ("GPT 困惑度 / LSTM 困惑度 < 1", ["lm-gpt", "lm-lstm"], lambda r: r["lm-gpt"] / r["lm-lstm"],
         lambda v: v < 1.0),
    ],
    "smoke": [],
}


def run_job(name: str, task: str, model: str, out: Path, env: dict) -> dict:
    """训练 + 在测试集上评估一项。成功时返回 {"value": 指标的值, "seconds": 训练加评估的秒数,
    "evaluate": aigc evaluate 的全部输出, ...}，失败时返回 {"error": 说明}。"""
    aigc = [sys.executable, "-m", "aigc_lib.cli"]
    start = time.perf_counter()
    train = subprocess.run([*aigc, "train", "--task", task, "--model", model, "--out", str(out / name), "--quiet", "--overwrite"],
                           capture_output=True, encoding="utf-8", env=env)
    if train.returncode != 0:
        return {"error": f"aigc train 失败（退出码 {train.returncode}）：{train.stderr.strip()[-500:]}"}
    evaluate = subprocess.run([*aigc, "evaluate", str(out / name), "--split", "test", "--json"],
                              capture_output=True, encoding="utf-8", env=env)
    if evaluate.returncode != 0:
        return {"error": f"aigc evaluate 失败（退出码 {evaluate.returncode}）：{evaluate.stderr.strip()[-500:]}"}
    result = json.loads(evaluate.stdout)
    metric = get_task(task).metric
    return {"task": task, "model": model, "metric": metric, "value": result[metric],
            "seconds": round(time.perf_counter() - start, 1), "evaluate": result}


def check_bars(profile: str, values: dict[str, float]) -> list[dict]:
    """把测到的值（项目名 -> 指标）与档位的门槛对照；缺了需要的项目的门槛不判断（measured=False）。"""
    rows = []
    for text, needs, compute, ok in BARS[profile]:
        if not all(name in values for name in needs):
            rows.append({"bar": text, "measured": False})
            continue
        value = compute(values)
        rows.append({"bar": text, "measured": True, "value": value, "passed": bool(ok(value))})
    return rows


def save(out: Path, profile: str, jobs: dict, values: dict) -> list[dict]:
    """对照门槛，把到目前为止的全部结果写进 <out>/bars.json；返回对照结果。"""
    bars = check_bars(profile, values)
    (out / "bars.json").write_text(json.dumps({"profile": profile, "jobs": jobs, "bars": bars},
                                              ensure_ascii=False, indent=1), "utf-8")
    return bars


def main(argv: list[str] | None = None) -> int:
    names = [job[0] for job in JOBS]
    parser = ChineseArgumentParser(description="用 aigc train / evaluate 测每个任务，与课程的质量门槛对照")
    parser.add_argument("--profile", choices=sorted(BARS), default=None, help="运行档位（默认按 AIGC_PROFILE）")
    parser.add_argument("--only", default=None, help=f"只测这些项目，逗号分隔：{','.join(names)}")
    parser.add_argument("--budget", type=float, default=None, help="总秒数；用完后不再开始新的一项")
    parser.add_argument("--out", default="runs/quality_bars", help="训练结果和 bars.json 写到这里")
    args = parser.parse_args(argv)

    chosen = names if args.only is None else [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in chosen if n not in names]
    if unknown:
        parser.error(f"不认识的项目：{', '.join(unknown)}；可选：{', '.join(names)}")
    profile = args.profile or current_profile()
    env = dict(os.environ, AIGC_PROFILE=profile, AIGC_PROGRESS="off")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    start = time.perf_counter()
    jobs, values = {}, {}
    bars = save(out, profile, jobs, values)
    for name, task, model in JOBS:
        if name not in chosen:
            continue
        if args.budget is not None and time.perf_counter() - start > args.budget:
            jobs[name] = {"skipped": f"--budget {args.budget:.0f} 秒已用完"}
        else:
            print(f"—— {name}：aigc train --task {task} --model {model}（{profile} 档位）", flush=True)
            jobs[name] = run_job(name, task, model, out, env)
            if "value" in jobs[name]:
                values[name] = jobs[name]["value"]
                print(f"   测试集 {jobs[name]['metric']} = {values[name]:.4f}，{jobs[name]['seconds']} 秒", flush=True)
            else:
                print(f"   {jobs[name]['error']}", flush=True)
        bars = save(out, profile, jobs, values)
    print(f"\n{profile} 档位的门槛：")
    for row in bars:
        verdict = ("达标" if row["passed"] else "未达标") if row["measured"] else "没有测"
        shown = f"{row['value']:.4f}" if row["measured"] else "—"
        print(f"  {verdict}{'　' * (3 - len(verdict))} {shown:>8}  {row['bar']}")  # 全角空格补齐中文
    measured = [row for row in bars if row["measured"]]
    failed = any("error" in job for job in jobs.values())
    print(f"passed {sum(row['passed'] for row in measured)}/{len(measured)}")
    return 1 if failed or not all(row["passed"] for row in measured) else 0


if __name__ == "__main__":
    sys.exit(main())
