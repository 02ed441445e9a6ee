"""评估指标：全部是普通函数，输入是列表、NumPy 数组或任意设备上的张量，输出是浮点数。

按用途分成几个小文件，每个都可以单独阅读和复制：

- ``classification``：准确率、P/R/F1（binary / micro / macro / weighted）、混淆矩阵、分类报告；
- ``ranking``：ROC、AUC、PR 曲线、平均精度；
- ``generation``：困惑度、BLEU、ROUGE-L、distinct-n；
- ``sequence``：分词 P/R/F1、实体级 P/R/F1、逐字准确率。

测试把它们逐一与 scikit-learn、sacrebleu、seqeval 在大量随机输入上对照。
"""

from .classification import accuracy, classification_report, confusion_matrix, precision_recall_f1
from .generation import bleu, distinct_n, perplexity, rouge_l, rouge_l_corpus
from .ranking import average_precision, precision_recall_curve, roc_auc, roc_curve
from .sequence import bio_to_spans, entity_prf, segmentation_prf, span_prf, token_accuracy, word_spans

__all__ = [
    "accuracy", "average_precision", "bio_to_spans", "bleu", "classification_report",
    "confusion_matrix", "distinct_n", "entity_prf", "perplexity", "precision_recall_curve",
    "precision_recall_f1", "roc_auc", "roc_curve", "rouge_l", "rouge_l_corpus", "segmentation_prf",
    "span_prf", "token_accuracy", "word_spans",
]
