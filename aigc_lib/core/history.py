"""训练记录 History：每轮一条 dict，能画图、找最好的一轮、存进检查点。"""

from __future__ import annotations

import math


def _infer_mode(monitor: str, mode: str | None = None) -> str:
    """名字里有 loss / error / perplexity / ppl 的越小越好，其余（accuracy、f1……）越大越好。"""
    if mode in ("min", "max"):
        return mode
    if mode is not None:
        raise ValueError(f"mode 只能是 'min'、'max' 或 None（按名字推断），收到 {mode!r}。")
    name = monitor.lower()
    return "min" if any(word in name for word in ("loss", "error", "perplexity", "ppl")) else "max"


class History:
    """训练记录：每轮一条 dict。``history["val_loss"]`` 是各轮验证损失组成的列表。

    每条记录的键：epoch（从 1 数）、train_loss、val_loss（有验证集时）、val_<指标名>、
    lr（本轮结束时的学习率）、time（本轮秒数，含验证）、items_per_s（训练吞吐，样本/秒）。
    ``stop_reason`` 是 None、"early_stopping" 或 "interrupted"。

    >>> h = History([{"epoch": 1, "val_loss": 0.9}, {"epoch": 2, "val_loss": 0.7}])
    >>> h["val_loss"], h.best("val_loss")["epoch"]
    ([0.9, 0.7], 2)
    """

    def __init__(self, records=None, stop_reason: str | None = None) -> None:
        self.records = [dict(r) for r in records or []]
        self.stop_reason = stop_reason

    def append(self, record: dict) -> None:
        self.records.append(dict(record))

    def __len__(self) -> int:
        return len(self.records)

    def keys(self) -> list[str]:
        seen = {}
        for record in self.records:
            seen.update(dict.fromkeys(record))
        return list(seen)

    def __getitem__(self, key: str) -> list:
        if key not in self.keys():
            raise KeyError(f"训练记录里没有 {key!r}。可用的键：{', '.join(self.keys()) or '（还没有记录）'}")
        return [record.get(key) for record in self.records]

    def best(self, monitor: str = "val_loss", mode: str | None = None) -> dict:
        """最好的一轮的记录（一个 dict，含 "epoch"）。mode 省略时按名字推断（见 _infer_mode）。"""
        mode = _infer_mode(monitor, mode)
        scored = [r for r in self.records if isinstance(r.get(monitor), (int, float)) and not math.isnan(r[monitor])]
        if not scored:
            raise KeyError(f"训练记录里没有 {monitor!r} 的有效数值。可用的键：{', '.join(self.keys())}")
        pick = min if mode == "min" else max
        return dict(pick(scored, key=lambda r: r[monitor]))

    def to_dict(self) -> dict:
        """普通 dict（可存进 weights_only 检查点或 json）。"""
        return {"records": [dict(r) for r in self.records], "stop_reason": self.stop_reason}

    @classmethod
    def from_dict(cls, data: dict | None) -> "History":
        data = data or {}
        return cls(data.get("records"), data.get("stop_reason"))

    def __repr__(self) -> str:
        if not self.records:
            return "History(还没有记录)"
        last = self.records[-1]
        shown = ", ".join(f"{k}={v:.4g}" for k, v in last.items() if isinstance(v, float))
        return f"History({len(self)} 轮; 最后一轮: {shown})"

    def plot(self, fig=None):
        """画损失曲线（左）和验证指标（右），中文标签；返回 matplotlib Figure。

        notebook 里写 ``history.plot(); plt.show()``。传入 fig 时清空后在其上重画（实时曲线用）。
        """
        import matplotlib.pyplot as plt

        metric_keys = [k for k in self.keys() if k.startswith("val_") and k != "val_loss"]
        if fig is None:
            fig = plt.figure(figsize=(10 if metric_keys else 5.5, 3.6))
        fig.clear()
        axes = fig.subplots(1, 2 if metric_keys else 1, squeeze=False)[0]
        epochs = self["epoch"] if self.records else []
        ax = axes[0]
        for key, label in (("train_loss", "训练损失"), ("val_loss", "验证损失")):
            if key in self.keys():
                ax.plot(epochs, self[key], marker="o", label=label)
        ax.set(xlabel="轮次", ylabel="损失", title="损失曲线")
        if "val_loss" in self.keys() and len(self):
            best = self.best("val_loss")["epoch"]
            ax.axvline(best, color="gray", linestyle=":", label=f"最佳（第 {best} 轮）")
        ax.legend()
        if metric_keys:
            for key in metric_keys:
                axes[1].plot(epochs, self[key], marker="o", label="验证 " + key[len("val_") :])
            axes[1].set(xlabel="轮次", ylabel="指标", title="验证指标")
            axes[1].legend()
        for ax in axes:
            ax.xaxis.get_major_locator().set_params(integer=True)
        fig.tight_layout()
        return fig
