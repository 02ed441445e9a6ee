"""从头重新训练课程自带的参考模型（模型库，见 ``aigc pretrained list``），并把它们导出到 ``aigc_lib/zoo/``。

    python benchmarks/train_reference.py                    # 全部，依次训练
    python benchmarks/train_reference.py --only lm-gpt      # 只训练一个（--only 可以给多个，逗号隔开）
    python benchmarks/train_reference.py --lanes 2          # 两条"车道"并行，每个进程 1 个线程（2 核机器上最快）
    python benchmarks/train_reference.py --export-only      # 不训练，只把 runs/reference/ 里已有的结果再导出一遍

每个参考模型就是学习者也能敲的一条 ``aigc train`` 命令（下面的 RECIPES），只是比章节里训练得久。
训练完写 ``runs/reference/<名字>/train_provenance.json``（命令、git 提交、种子、用时、硬件），
再调用 :func:`aigc_lib.zoo.export_run` 导出：权重存成 safetensors（float16），词表等存成 JSON
（拼音模型还在验证集上挑好浅融合的 λ 和词二元重打分的 μ，见 DECODING），并在导出后的权重上重新评估 val / test，
把指标写进来历文件 ``aigc_lib/zoo/<名字>.json``。
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from zh_args import ChineseArgumentParser

ROOT = Path(__file__).resolve().parent.parent

# 名字 -> aigc train 的参数（--out、--seed、--quiet 由脚本加上）。都在 cpu 档位下、每个进程 1 个线程训练。
RECIPES: dict[str, list[str]] = {
    "lm-gpt": ["--task", "lm", "--model", "gpt", "--epochs", "12", "--samples-per-epoch", "0", "--val-blocks", "0",
               "--dropout", "0.1", "--lr", "2e-3"],
    "segment": ["--task", "segment", "--model", "bilstm-crf", "--epochs", "12", "--hidden-dim", "192",
                "--dropout", "0.2"],
    "pos": ["--task", "pos", "--model", "bilstm-crf", "--epochs", "6", "--hidden-dim", "192", "--dropout", "0.2"],
    "pinyin": ["--task", "pinyin", "--model", "seq2seq", "--epochs", "16", "--num-layers", "4", "--dropout", "0.1"],
    "ner": ["--task", "ner", "--model", "bilstm-crf", "--epochs", "12", "--hidden-dim", "192", "--dropout", "0.2"],
    "sentiment-gru": ["--task", "sentiment", "--model", "gru", "--epochs", "10", "--vocab-size", "12000"],
    # 与 lm-gpt 参数量相当（约 127 万对 124 万）、读同样多的字：第 09 章比较两种结构用它
    "lm-lstm": ["--task", "lm", "--model", "lstm", "--epochs", "12", "--samples-per-epoch", "0", "--val-blocks", "0",
                "--dropout", "0.1"],
    # 从 lm-gpt 出发的指令微调（第 15 章）：必须排在 lm-gpt 之后，它读的是模型库里的 lm-gpt
    "chat": ["--task", "sft", "--model", "gpt", "--train-per-type", "4000", "--epochs", "6", "--lr", "2e-3"],
}
SEED = 0


def tune_pinyin(loaded) -> dict:
    """拼音模型导出时挑解码设置（验证集前 1000 个小句）：先挑浅融合的 λ，再在它上面挑词二元语法重打分的 μ。
    语言模型是模型库里的 lm-gpt：必须先导出 lm-gpt。"""
    from aigc_lib import pretrained
    from aigc_lib.tasks.pinyin import tune_fusion, tune_rescoring

    lm = pretrained("lm-gpt")
    fusion = tune_fusion(loaded.model, loaded.config, lm, "lm-gpt")
    return tune_rescoring(loaded.model, loaded.config, lm, fusion)


# 导出时在验证集上挑好、写进 config 的解码设置（见 aigc_lib.zoo.export_run 的 decoding）
DECODING = {"pinyin": tune_pinyin}


def git_commit() -> str:
    result = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                           capture_output=True, text=True).stdout.strip()
    return result.stdout.strip() + ("+改动未提交" if dirty else "")


def hardware() -> str:
    import torch

    if torch.cuda.is_available():
        return f"GPU {torch.cuda.get_device_name(0)}"
    return f"CPU {platform.processor() or platform.machine()}，{os.cpu_count()} 核，每个训练进程 1 个线程"


def train(name: str, out_root: Path) -> dict:
    """训练一个参考模型，返回训练的来历（也写进 <out>/train_provenance.json）。"""
    out = out_root / name
    command = ["aigc", "train", *RECIPES[name], "--out", str(Path("runs/reference") / name), "--seed", str(SEED)]
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", AIGC_PROFILE="cpu")
    started, commit = time.strftime("%Y-%m-%d %H:%M:%S"), git_commit()  # 开始训练时的代码版本
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "aigc_lib.cli", "train", *RECIPES[name], "--out", str(out),
                    "--seed", str(SEED), "--quiet", "--overwrite"], env=env, check=True)
    provenance = {"name": name, "command": "AIGC_PROFILE=cpu OMP_NUM_THREADS=1 " + " ".join(command),
                  "git_commit": commit, "seed": SEED, "started": started,
                  "wall_seconds": round(time.perf_counter() - start, 1), "hardware": hardware()}
    (out / "train_provenance.json").write_text(json.dumps(provenance, ensure_ascii=False, indent=1), encoding="utf-8")
    print(f"{name}：训练完成，用时 {provenance['wall_seconds']:.0f} 秒", flush=True)
    return provenance


def export(name: str, out_root: Path) -> None:
    from aigc_lib.zoo import export_run

    provenance = json.loads((out_root / name / "train_provenance.json").read_text(encoding="utf-8"))
    path = export_run(out_root / name, name, provenance, decoding=DECODING.get(name))
    print(f"{name}：已导出到 {path}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = ChineseArgumentParser(description="重新训练并导出课程的参考模型")
    parser.add_argument("--only", default="", help="只处理这些（逗号隔开）：" + ", ".join(RECIPES))
    parser.add_argument("--lanes", type=int, default=1, help="同时训练几个（每个 1 个线程）")
    parser.add_argument("--out", default=str(ROOT / "runs" / "reference"), help="训练结果放在哪里")
    parser.add_argument("--export-only", action="store_true", help="不训练，只导出已有的结果")
    parser.add_argument("--train-only", action="store_true", help="只训练，不导出")
    args = parser.parse_args(argv)
    names = [n for n in args.only.split(",") if n] or list(RECIPES)
    unknown = [n for n in names if n not in RECIPES]
    if unknown:
        parser.error(f"没有参考模型 {unknown}；可选：{', '.join(RECIPES)}")
    out_root = Path(args.out)

    def one(name: str) -> None:
        if not args.export_only:
            train(name, out_root)
        if not args.train_only:
            export(name, out_root)

    # 每条车道按 names 的顺序轮流取下一项
    with ThreadPoolExecutor(max_workers=max(1, args.lanes)) as pool:
        for future in [pool.submit(one, name) for name in names]:
            future.result()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
