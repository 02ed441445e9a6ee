"""CRF 与 BiLSTM 标注器的测试：CRF 对照暴力枚举所有标签路径；标注器能记住一小批数据。"""

import itertools
import math
import random

import pytest
import torch
import torch.nn.functional as F

from aigc_lib.models.layers import length_mask
from aigc_lib.models.tagger import CRF, BiLSTMTagger
from aigc_lib.tasks.tagging import tagging_step


def random_case(seed):
    """随机的小 CRF 问题：B <= 3, T <= 5, K <= 4，句长各不相同，补齐位置放垃圾值。"""
    gen = torch.Generator().manual_seed(seed)
    rng = random.Random(seed)
    B, T, K = rng.randint(1, 3), rng.randint(1, 5), rng.randint(1, 4)
    crf = CRF(K).double()
    with torch.no_grad():
        for p in crf.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64))
    lengths = torch.tensor([rng.randint(1, T) for _ in range(B)])
    mask = length_mask(lengths, T)
    emissions = torch.randn(B, T, K, generator=gen, dtype=torch.float64)
    # 补齐位置放很大的值：如果哪里忘了掩码，结果会明显不对
    emissions = torch.where(mask.unsqueeze(2), emissions, torch.full_like(emissions, 1e3))
    tags = torch.randint(0, K, (B, T), generator=gen)
    tags = tags.masked_fill(~mask, -100)
    return crf, emissions, mask, tags, lengths


def brute_force_scores(crf, emissions_b, n):
    """逐条枚举长度为 n 的所有标签路径，用纯 Python 按定义算分数。"""
    K = crf.num_tags
    trans = crf.transitions.tolist()
    start, end = crf.start_transitions.tolist(), crf.end_transitions.tolist()
    emit = emissions_b.tolist()
    scores = {}
    for path in itertools.product(range(K), repeat=n):
        s = start[path[0]] + end[path[-1]] + sum(emit[t][path[t]] for t in range(n))
        s += sum(trans[path[t - 1]][path[t]] for t in range(1, n))
        scores[path] = s
    return scores


@pytest.mark.parametrize("seed", range(60))
def test_crf_matches_brute_force(seed):
    crf, emissions, mask, tags, lengths = random_case(seed)
    log_z = crf.log_partition(emissions, mask)
    paths = crf.decode(emissions, mask)
    gold_scores = crf.path_score(emissions, tags, mask)
    nll = crf.nll(emissions, tags, mask, reduction="none")
    for b, n in enumerate(lengths.tolist()):
        scores = brute_force_scores(crf, emissions[b], n)
        values = list(scores.values())
        m = max(values)
        expected_log_z = m + math.log(sum(math.exp(v - m) for v in values))
        assert log_z[b].item() == pytest.approx(expected_log_z, abs=1e-9)
        best = max(scores, key=scores.get)
        assert tuple(paths[b]) == best
        gold = tuple(tags[b, :n].tolist())
        assert gold_scores[b].item() == pytest.approx(scores[gold], abs=1e-9)
        assert nll[b].item() >= -1e-12  # 只有一条路径时恰为 0，允许舍入误差
        assert nll[b].item() == pytest.approx(expected_log_z - scores[gold], abs=1e-9)
    assert crf.nll(emissions, tags, mask).item() == pytest.approx(nll.mean().item())
    assert crf.nll(emissions, tags, mask, reduction="sum").item() == pytest.approx(nll.sum().item())


def test_crf_rejects_empty_sentences_and_bad_reduction():
    crf = CRF(3)
    emissions = torch.randn(2, 4, 3)
    mask = length_mask(torch.tensor([4, 0]), 4)
    with pytest.raises(ValueError, match="mask"):
        crf.log_partition(emissions, mask)
    with pytest.raises(ValueError, match="reduction"):
        crf.nll(
            emissions,
            torch.zeros(2, 4, dtype=torch.long),
            torch.ones(2, 4, dtype=torch.bool),
            "avg",
        )


def test_crf_gradient_is_expected_counts_minus_gold():
    """d NLL / d emissions = 边缘概率 - 金标准 one-hot；边缘概率由暴力枚举得到。"""
    for seed in range(10):
        crf, emissions, mask, tags, lengths = random_case(seed)
        emissions = emissions.clone().requires_grad_(True)
        crf.nll(emissions, tags, mask, reduction="sum").backward()
        for b, n in enumerate(lengths.tolist()):
            scores = brute_force_scores(crf, emissions[b].detach(), n)
            m = max(scores.values())
            z = sum(math.exp(v - m) for v in scores.values())
            expected = torch.zeros(emissions.shape[1:], dtype=torch.float64)
            for path, s in scores.items():
                for t, k in enumerate(path):
                    expected[t, k] += math.exp(s - m) / z
            for t in range(n):
                expected[t, tags[b, t]] -= 1
            torch.testing.assert_close(emissions.grad[b], expected)


def make_batch(seed, vocab_size=30, num_tags=5, batch=4, max_len=7):
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, max_len + 1, (batch,), generator=gen)
    lengths[0] = max_len
    tokens = torch.randint(1, vocab_size, (batch, max_len), generator=gen)
    tags = torch.randint(0, num_tags, (batch, max_len), generator=gen)
    mask = length_mask(lengths, max_len)
    return tokens.masked_fill(~mask, 0), lengths, tags.masked_fill(~mask, -100)


@pytest.mark.parametrize("use_crf", [True, False])
def test_tagger_overfits_tiny_batch(use_crf):
    """一小批随机标签（无规律可学）也能被记住：模型、损失和解码是连通的。"""
    torch.manual_seed(1)
    tokens, lengths, tags = make_batch(1)
    model = BiLSTMTagger(30, 5, embed_dim=16, hidden_dim=32, dropout=0.0, use_crf=use_crf)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    losses = []
    for _ in range(60):
        loss = tagging_step(model, (tokens, lengths, tags))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.1 * losses[0]
    model.eval()
    expected = [row[:n] for row, n in zip(tags.tolist(), lengths.tolist())]
    assert model.decode(tokens, lengths) == expected


def test_padding_does_not_change_a_sentence():
    """同一句话单独送进去和与更长的句子一起补齐送进去，发射分数与解码结果都一样（打包生效）。"""
    for seed in range(5):
        torch.manual_seed(seed)
        model = BiLSTMTagger(30, 4, embed_dim=8, hidden_dim=12, num_layers=2).eval()
        tokens, lengths, _ = make_batch(seed, num_tags=4)
        batched = model(tokens, lengths)
        paths = model.decode(tokens, lengths)
        for b, n in enumerate(lengths.tolist()):
            alone = model(tokens[b : b + 1, :n], lengths[b : b + 1])
            torch.testing.assert_close(batched[b, :n], alone[0])
            assert model.decode(tokens[b : b + 1, :n], lengths[b : b + 1]) == [paths[b]]


def test_softmax_loss_matches_cross_entropy_with_ignore_index():
    for seed in range(5):
        torch.manual_seed(seed)
        model = BiLSTMTagger(30, 5, embed_dim=8, hidden_dim=12, use_crf=False).eval()
        tokens, lengths, tags = make_batch(seed)
        logits = model(tokens, lengths)
        expected = F.cross_entropy(logits.reshape(-1, 5), tags.reshape(-1), ignore_index=-100)
        torch.testing.assert_close(model.loss(tokens, lengths, tags), expected)
        with pytest.raises(RuntimeError, match="use_crf"):
            _ = model.transitions


def test_config_rebuilds_model_and_pretrained_embeddings_are_used():
    vectors = torch.randn(30, 10)
    model = BiLSTMTagger(
        30, 4, hidden_dim=12, pretrained_embeddings=vectors, freeze_embeddings=True
    )
    assert model.config["embed_dim"] == 10 and model.config["pretrained_embeddings"] is None
    torch.testing.assert_close(model.embedding.weight[1:], vectors[1:])
    assert model.embedding.weight[0].eq(0).all()  # 补齐符（padding_idx=0）的嵌入仍为 0
    assert not model.embedding.weight.requires_grad
    assert model.transitions.shape == (4, 4)

    clone = BiLSTMTagger(**model.config)
    clone.load_state_dict(model.state_dict())
    model.eval(), clone.eval()
    tokens, lengths, _ = make_batch(0, num_tags=4)
    torch.testing.assert_close(clone(tokens, lengths), model(tokens, lengths))
    assert not clone.embedding.weight.requires_grad

    with pytest.raises(ValueError, match="pretrained_embeddings"):
        BiLSTMTagger(31, 4, pretrained_embeddings=vectors)
    with pytest.raises(ValueError, match="hidden_dim"):
        BiLSTMTagger(30, 4, hidden_dim=7)
    with pytest.raises(ValueError, match="空句子"):
        model(tokens, torch.zeros_like(lengths))


def test_tagger_trains_through_fit_with_tagging_step():
    """训练引擎 fit 用 step=tagging_step 训练，损失下降、能记住这一小批。"""
    from aigc_lib.core.training import fit

    torch.manual_seed(0)
    tokens, lengths, tags = make_batch(3)
    model = BiLSTMTagger(30, 5, embed_dim=16, hidden_dim=32, dropout=0.0)
    history = fit(
        model,
        [(tokens, lengths, tags)],
        epochs=60,
        step=tagging_step,
        device="cpu",
        optimizer=torch.optim.Adam(model.parameters(), lr=0.05),
        progress=False,
    )
    assert history["train_loss"][-1] < 0.1 * history["train_loss"][0]
    model.eval()
    assert model.decode(tokens, lengths) == [
        row[:n] for row, n in zip(tags.tolist(), lengths.tolist())
    ]
