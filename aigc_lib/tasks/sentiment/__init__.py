"""情感分类任务：数据准备与任务类在 ``task.py``，基线（snownlp 的朴素贝叶斯）在 ``baselines.py``。"""

from .baselines import SnowNLPBayes, snownlp_tokens
from .task import LABELS, RNNSizes, SentimentSizes, SentimentTask, TransformerSizes, pretrained_vectors

__all__ = ["LABELS", "RNNSizes", "SentimentSizes", "SentimentTask", "SnowNLPBayes", "TransformerSizes",
           "pretrained_vectors", "snownlp_tokens"]
