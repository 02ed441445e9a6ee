"""每个模型家族训练有多快？RNN、LSTM、GRU、双向 GRU、Transformer 在同一份数据、同样的批上过 fit。

    python benchmarks/family_throughput.py        # CPU 上约一分钟；有 GPU 时自动用 GPU（并开混合精度）

数据是真实的评论（训练集开头的若干条，jieba 分词，截断到 160 个词），按长度分桶组批，与第 05、06 章
和 ``aigc train --task sentiment`` 的做法相同。五个家族的尺寸也取自那里：词向量 / 隐状态 128 维，
RNN 家族用 max 池化；Transformer 是 2 层、4 头、d_model 128。

每个家族先热身一轮（不计时），再轮流各跑 REPEATS 轮，报告吞吐的中位数。计时循环与时钟在
benchmarks/timing.py（与 fit_overhead.py 共用）：GPU 上用墙钟时间，``amp="auto"``（支持 bf16 就用 bf16）；
CPU 上用单线程和本进程的 CPU 时间，共享或繁忙的机器上也比较得准。
最后一行 ``ratio <transformer/gru>`` 是 Transformer 与单向 GRU 吞吐中位数之比（大于 1 表示 Transformer 更快）。
"""

import statistics

import torch

from aigc_lib import RNNClassifier, TransformerClassifier, Vocab, fit, load_reviews, make_loader, tokenize
from aigc_lib.console import pad
from aigc_lib.core.runtime import device, seed_everything
from timing import interleaved_throughput

REPEATS = 3
MAX_LEN = 160


def sizes(dev):
    if dev.type == "cuda":
        return dict(samples=8192, batch=128)
    return dict(samples=768, batch=64)


def families(vocab_size):
    """家族名 -> 建模型的函数（每次都用同一个种子重新建）。"""
    rnn = dict(vocab_size=vocab_size, embed_dim=128, hidden_dim=128, pooling="max", dropout=0.3)
    return {
        "rnn": lambda: RNNClassifier(kind="rnn", **rnn),
        "lstm": lambda: RNNClassifier(kind="lstm", **rnn),
        "gru": lambda: RNNClassifier(kind="gru", **rnn),
        "bi-gru": lambda: RNNClassifier(kind="gru", bidirectional=True, **rnn),
        "transformer": lambda: TransformerClassifier(vocab_size, d_model=128, num_heads=4, num_layers=2,
                                                     dim_feedforward=256, dropout=0.3, context_len=MAX_LEN),
    }


def cell(text, width: int) -> str:
    """按显示宽度补空格（一个汉字占两格）：width > 0 右对齐，< 0 左对齐。"""
    return pad(str(text), abs(width), right=width > 0)


def one_epoch(build, loader, dev):
    """建模型和优化器（不计时），返回 (用 fit 训练一轮的函数, 样本数)，交给 interleaved_throughput 计时。"""
    seed_everything(0)
    model = build().to(dev)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    amp = "auto" if dev.type == "cuda" else "off"

    def work():
        fit(model, loader, epochs=1, optimizer=optimizer, device=dev, amp=amp, progress=False)

    return work, len(loader.dataset)


def main():
    dev = device()
    cfg = sizes(dev)
    if dev.type == "cpu":
        # 单线程：繁忙或共享的机器上 OpenMP 线程互相等待，多线程的耗时能相差几倍，比较就没有意义了
        torch.set_num_threads(1)
    pairs = load_reviews("train")[: cfg["samples"]]
    tokens = [tokenize(text, "word")[:MAX_LEN] for text, _ in pairs]
    vocab = Vocab(tokens, min_freq=1, max_size=20000)
    data = [(vocab.encode(t), label) for t, (_, label) in zip(tokens, pairs)]
    loader = make_loader(data, batch_size=cfg["batch"], shuffle=True, seed=0)  # 打乱 + 长度分桶
    mean_len = sum(len(ids) for ids, _ in data) / len(data)
    print(f"设备 {dev}，{len(data)} 条评论（平均 {mean_len:.0f} 个词），每批 {cfg['batch']} 条，"
          f"每个家族热身 1 轮、计时 {REPEATS} 轮（轮流）")

    builds = families(len(vocab))
    runs = {name: (lambda build=build: one_epoch(build, loader, dev)) for name, build in builds.items()}
    speeds = interleaved_throughput(runs, dev, REPEATS, warmup=1)

    unit = "样本/秒" if dev.type == "cuda" else "样本/CPU秒"
    gru = statistics.median(speeds["gru"])
    print(cell("家族", -12) + cell("参数量", 12) + cell("中位数 " + unit, 22) + cell("相对 GRU", 10) + "   各次")
    for name, values in speeds.items():
        params = sum(p.numel() for p in builds[name]().parameters())
        median = statistics.median(values)
        print(cell(name, -12) + cell(f"{params:,}", 12) + cell(f"{median:.0f}", 22) + cell(f"{median / gru:.2f}", 10)
              + "   " + " ".join(f"{v:.0f}" for v in values))
    print(f"ratio {statistics.median(speeds['transformer']) / gru:.3f}")


if __name__ == "__main__":
    main()
