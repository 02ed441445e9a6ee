"""情感任务的词向量预训练：skip-gram 向量确实按词表顺序进了嵌入层，跟着 --seed 走，0 轮时不预训练。"""

import pytest
import torch

from aigc_lib.models import RNNClassifier
from aigc_lib.data.wordvectors import train_skipgram_fast
from aigc_lib.core.runtime import seed_everything
from aigc_lib.tasks.base import TaskError
from aigc_lib.tasks.sentiment import SentimentTask
from aigc_lib.tasks.sentiment.task import _train_tokens

TINY = {"train_limit": 300, "tokens": "char", "vocab_size": 400, "max_tokens": 24, "embed_dim": 16, "hidden_dim": 8}


@pytest.fixture(autouse=True)
def smoke(monkeypatch):
    monkeypatch.setenv("AIGC_PROFILE", "smoke")


def build(task, sizes, artifacts, seed):
    seed_everything(seed)
    return task.build_model("gru", sizes, artifacts)


def test_embedding_starts_from_skipgram_vectors_of_the_training_texts():
    task = SentimentTask()
    sizes = task.sizes("gru", dict(TINY, pretrain_epochs=2))
    _, _, artifacts = task.prepare(sizes)
    itos = artifacts["vocab"]
    model = build(task, sizes, artifacts, seed=3)
    weight = model.embedding.weight.detach()

    # 对照：直接在同样的训练文本上训练 skip-gram（同样的种子、单线程）
    texts = [list(tokens) for tokens in _train_tokens(sizes)]
    assert len(texts) == 300
    vectors, _ = train_skipgram_fast(texts, dim=16, window=5, min_freq=sizes["min_freq"], epochs=2, workers=1, seed=3)
    covered = [i for i, word in enumerate(itos) if word in vectors]
    assert len(covered) == len(itos) - 2  # 除了 <pad>、<unk>，词表里的每个词（字）都有向量
    assert torch.equal(weight[0], torch.zeros(16))
    cosine = torch.nn.functional.cosine_similarity(weight[covered], vectors.vectors[[vectors.index[itos[i]] for i in covered]])
    assert cosine.min().item() == pytest.approx(1.0, abs=1e-5)
    assert weight[covered].std(dim=1).mean().item() == pytest.approx(1.0, rel=1e-3)

    # 换种子，向量跟着变；同一个种子，结果完全一样
    assert torch.equal(build(task, sizes, artifacts, seed=3).embedding.weight, model.embedding.weight)
    assert not torch.allclose(build(task, sizes, artifacts, seed=4).embedding.weight, model.embedding.weight)


def test_zero_pretrain_epochs_means_random_init_and_bad_values_are_clear():
    task = SentimentTask()
    sizes = task.sizes("gru", dict(TINY, pretrain_epochs=0))
    _, _, artifacts = task.prepare(sizes)
    model = build(task, sizes, artifacts, seed=5)
    seed_everything(5)
    reference = RNNClassifier(len(artifacts["vocab"]), kind="gru", embed_dim=16, hidden_dim=8, bidirectional=True,
                              dropout=sizes["dropout"], pooling="max")
    assert torch.equal(model.embedding.weight, reference.embedding.weight)
    with pytest.raises(TaskError, match="--pretrain-epochs 要大于等于 0 的整数"):  # 在准备数据之前就检查
        task.sizes("gru", dict(TINY, pretrain_epochs=-1))
    with pytest.raises(TaskError, match="--pretrain-epochs"):  # Transformer 不用它：覆盖了就报错，而不是悄悄忽略
        task.sizes("transformer", {"pretrain_epochs": 1})
