"""词向量的测试：样本构造对照暴力循环，手写梯度对照 autograd，查询与读写对照 gensim，
两个话题的合成语料上 skip-gram 与 GloVe 把同话题的词学得更近。"""

import math
import random
from collections import Counter, defaultdict

import numpy as np
import pytest
import torch

from aigc_lib.models.embeddings import GloVe, SkipGram, glove_step, negative_table, skipgram_step
from aigc_lib.data.wordvectors import (
    TensorBatches,
    WordVectors,
    build_vocab,
    cooccurrence,
    encode_corpus,
    keep_probabilities,
    sgns_update_,
    skipgram_pairs,
    subsample,
    train_skipgram_fast,
)


def random_corpus(seed, n_sentences=30, vocab=12, max_len=9):
    rng = random.Random(seed)
    words = [f"w{i}" for i in range(vocab)]
    weights = [1 / (i + 1) for i in range(vocab)]  # 像真实语料一样长尾
    return [rng.choices(words, weights, k=rng.randint(1, max_len)) for _ in range(n_sentences)]


def topic_corpus(seed=0, n_sentences=300, length=8):
    """两个话题：a0..a9 只和 a* 同句，b0..b9 只和 b* 同句。"""
    rng = random.Random(seed)
    topics = [[f"a{i}" for i in range(10)], [f"b{i}" for i in range(10)]]
    return [rng.choices(topics[s % 2], k=length) for s in range(n_sentences)]


def within_minus_across(wv):
    """同话题词对的平均余弦 - 跨话题词对的平均余弦。"""
    unit = wv.unit
    topic = torch.tensor([w.startswith("a") for w in wv.words])
    sims = unit @ unit.T
    same = topic[:, None] == topic[None, :]
    off_diagonal = ~torch.eye(len(wv), dtype=torch.bool)
    return (sims[same & off_diagonal].mean() - sims[~same].mean()).item()


# --- 词表与语料编码 ---------------------------------------------------------


def test_build_vocab_and_encode_match_brute_force():
    for seed in range(20):
        sentences = random_corpus(seed)
        min_freq = seed % 4 + 1
        words, counts = build_vocab(sentences, min_freq=min_freq)
        flat = [w for s in sentences for w in s]
        expected = Counter(flat)
        first_seen = {w: flat.index(w) for w in expected}
        order = sorted(expected, key=lambda w: (-expected[w], first_seen[w]))
        assert words == [w for w in order if expected[w] >= min_freq]
        assert counts.tolist() == [expected[w] for w in words]

        ids, sentence_ids = encode_corpus(sentences, words)
        rebuilt = defaultdict(list)
        for i, s in zip(ids.tolist(), sentence_ids.tolist()):
            rebuilt[s].append(words[i])
        for s, sentence in enumerate(sentences):
            assert rebuilt[s] == [w for w in sentence if w in set(words)]
    with pytest.raises(ValueError, match="min_freq"):
        build_vocab([["a"]], min_freq=2)


# --- 下采样、窗口取词对、负采样表 -------------------------------------------


def test_keep_probabilities_follow_word2vec_formula():
    for seed in range(10):
        counts = torch.randint(1, 10_000, (50,), generator=torch.Generator().manual_seed(seed))
        sample = 10.0 ** -(seed % 4 + 2)
        keep = keep_probabilities(counts, sample)
        total = counts.sum().item()
        for c, k in zip(counts.tolist(), keep.tolist()):
            f = c / total
            assert k == pytest.approx(min(1.0, (math.sqrt(f / sample) + 1) * sample / f))
    assert keep_probabilities(counts, 0).eq(1).all()


def test_subsample_statistics_and_seed():
    counts = torch.tensor([50_000, 20_000, 5000, 500, 50])
    keep = keep_probabilities(counts, sample=1e-2)
    ids = torch.repeat_interleave(torch.arange(5), counts)
    sentence_ids = torch.arange(len(ids)) // 10
    kept, kept_sentences = subsample(ids, sentence_ids, keep, torch.Generator().manual_seed(0))
    observed = torch.bincount(kept, minlength=5)
    for n, p, k in zip(counts.tolist(), keep.tolist(), observed.tolist()):
        sd = math.sqrt(n * p * (1 - p)) + 1e-9
        assert abs(k - n * p) <= 5 * sd + 1e-6  # 二项分布，5 个标准差内
    assert (sentence_ids[torch.isin(sentence_ids, kept_sentences)].numel()) > 0
    again, _ = subsample(ids, sentence_ids, keep, torch.Generator().manual_seed(0))
    other, _ = subsample(ids, sentence_ids, keep, torch.Generator().manual_seed(1))
    assert torch.equal(kept, again) and not torch.equal(kept, other)


def brute_force_pairs(sentence_ids, window):
    n = len(sentence_ids)
    return sorted(
        (i, j)
        for i in range(n)
        for j in range(max(0, i - window), min(n, i + window + 1))
        if j != i and sentence_ids[i] == sentence_ids[j]
    )


def test_skipgram_pairs_full_window_matches_brute_force():
    for seed in range(30):
        rng = random.Random(seed)
        n = rng.randint(1, 40)
        sentence_ids = torch.tensor(sorted(rng.randint(0, 6) for _ in range(n)))
        positions = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
        window = rng.randint(1, 6)
        centers, contexts = skipgram_pairs(positions, sentence_ids, window, shrink_window=False)
        # 编号是位置的一个排列，逆排列把词对变回位置对
        where = torch.argsort(positions)
        got = sorted(zip(where[centers].tolist(), where[contexts].tolist()))
        assert got == brute_force_pairs(sentence_ids.tolist(), window)


def test_skipgram_pairs_shrunk_windows_are_symmetric_and_uniform():
    window, n = 5, 30_000
    sentence_ids = torch.arange(n) // 1000  # 长句子：大多数中心词的窗口不会被句子边界截断
    centers, contexts = skipgram_pairs(
        torch.arange(n), sentence_ids, window, generator=torch.Generator().manual_seed(0)
    )
    by_center = defaultdict(set)
    for c, o in zip(centers.tolist(), contexts.tolist()):
        by_center[c].add(o)
    spans = []
    for c, ctx in by_center.items():
        b = max(abs(o - c) for o in ctx)
        assert 1 <= b <= window
        expected = {o for o in range(c - b, c + b + 1) if o != c and 0 <= o < n}
        assert ctx == {o for o in expected if sentence_ids[o] == sentence_ids[c]}
        if window <= c % 1000 < 1000 - window:
            spans.append(b)
    histogram = Counter(spans)
    m = len(spans)
    for b in range(1, window + 1):  # 每个窗口大小约占 1/window
        assert abs(histogram[b] - m / window) < 5 * math.sqrt(m * 0.2 * 0.8)


def test_negative_table_matches_unigram_power():
    for seed in range(10):
        counts = torch.randint(1, 5000, (40,), generator=torch.Generator().manual_seed(seed))
        size = 10_000 + seed * 777
        table = negative_table(counts, power=0.75, size=size)
        p = counts.numpy().astype(np.float64) ** 0.75
        p /= p.sum()
        slots = np.bincount(table.numpy(), minlength=len(counts))
        assert len(table) == size
        assert np.all(np.abs(slots - p * size) <= 1.0)
    draws = table[
        torch.randint(0, len(table), (200_000,), generator=torch.Generator().manual_seed(0))
    ]
    freq = np.bincount(draws.numpy(), minlength=len(counts)) / 200_000
    assert np.all(np.abs(freq - p) <= 5 * np.sqrt(p * (1 - p) / 200_000) + 2 / size)


# --- SkipGram：损失、手写更新、训练 -----------------------------------------


def test_skipgram_loss_matches_formula():
    for seed in range(10):
        torch.manual_seed(seed)
        model = SkipGram(15, 6, num_negatives=3).double()
        torch.nn.init.normal_(model.out_embed.weight)
        torch.nn.init.normal_(model.in_embed.weight)
        centers, contexts = torch.randint(0, 15, (7,)), torch.randint(0, 15, (7,))
        negatives = torch.randint(0, 15, (7, 3))
        v, u = model.in_embed.weight.tolist(), model.out_embed.weight.tolist()

        def log_sigmoid(x):
            return -math.log1p(math.exp(-x))

        total = 0.0
        for c, o, negs in zip(centers.tolist(), contexts.tolist(), negatives.tolist()):
            total -= log_sigmoid(np.dot(u[o], v[c]))
            total -= sum(log_sigmoid(-np.dot(u[k], v[c])) for k in negs)
        loss = model.loss(centers, contexts, negatives)
        assert loss.item() == pytest.approx(total / 7, rel=1e-9)


def test_sgns_update_equals_autograd_sgd_step():
    for seed in range(10):
        torch.manual_seed(seed)
        V, B, K, lr = 9, 32, 4, 0.3  # 小词表：一批里同一个词出现多次
        model = SkipGram(V, 5, num_negatives=K).double()
        torch.nn.init.normal_(model.out_embed.weight, std=0.5)
        torch.nn.init.normal_(model.in_embed.weight, std=0.5)
        centers, contexts = torch.randint(0, V, (B,)), torch.randint(0, V, (B,))
        negatives = torch.randint(0, V, (B, K))
        w_in = model.in_embed.weight.detach().clone()
        w_out = model.out_embed.weight.detach().clone()

        opt = torch.optim.SGD(model.parameters(), lr=lr)
        loss = model.loss(centers, contexts, negatives) * B  # 按批求和
        loss.backward()
        opt.step()

        returned = sgns_update_(w_in, w_out, centers, contexts, negatives, lr)
        assert returned.item() == pytest.approx(loss.item())
        torch.testing.assert_close(w_in, model.in_embed.weight.detach())
        torch.testing.assert_close(w_out, model.out_embed.weight.detach())


def test_skipgram_through_fit_learns_topics():
    from aigc_lib.core.training import fit

    torch.manual_seed(0)
    sentences = topic_corpus(n_sentences=200)
    words, counts = build_vocab(sentences)
    ids, sentence_ids = encode_corpus(sentences, words)
    centers, contexts = skipgram_pairs(ids, sentence_ids, window=2, shrink_window=False)
    model = SkipGram(len(words), 16, num_negatives=5, counts=counts)
    history = fit(
        model,
        TensorBatches(centers, contexts, batch_size=256),
        epochs=3,
        step=skipgram_step,
        optimizer=torch.optim.Adam(model.parameters(), lr=0.05),
        device="cpu",
        progress=False,
    )
    assert history["train_loss"][-1] < 0.8 * history["train_loss"][0]
    assert within_minus_across(WordVectors(words, model.vectors())) > 0.3


def test_train_skipgram_fast_learns_topics_and_is_seeded():
    sentences = topic_corpus(seed=1)
    settings = dict(dim=16, window=3, min_freq=1, sample=1e-2, epochs=5, lr=0.05, batch_size=256)
    for workers in (1, 2):  # 2 个线程时走 Hogwild 并行的那条路
        vectors, losses = train_skipgram_fast(sentences, **settings, workers=workers, device="cpu")
        assert len(losses) == 5 and losses[-1] < 0.8 * losses[0]
        assert within_minus_across(vectors) > 0.3
    threads = torch.get_num_threads()
    vectors, _ = train_skipgram_fast(sentences, **settings, workers=1, device="cpu")
    again, _ = train_skipgram_fast(sentences, **settings, workers=1, device="cpu")
    assert torch.equal(vectors.vectors, again.vectors)
    other, _ = train_skipgram_fast(sentences, **settings, workers=1, seed=1, device="cpu")
    assert not torch.equal(vectors.vectors, other.vectors)
    assert torch.get_num_threads() == threads  # 线程数设置被恢复
    with pytest.raises(RuntimeError, match="lr"):
        train_skipgram_fast(sentences, min_freq=1, sample=0, lr=1e30, batch_size=64, device="cpu")
    assert torch.get_num_threads() == threads


# --- GloVe --------------------------------------------------------------------


def test_cooccurrence_matches_brute_force():
    for seed in range(20):
        sentences = random_corpus(seed)
        words, _ = build_vocab(sentences)
        ids, sentence_ids = encode_corpus(sentences, words)
        window = seed % 5 + 1
        expected = defaultdict(float)
        for sentence in sentences:
            for i, wi in enumerate(sentence):
                for j in range(i + 1, min(len(sentence), i + window + 1)):
                    a, b = words.index(wi), words.index(sentence[j])
                    expected[a, b] += 1 / (j - i)
                    expected[b, a] += 1 / (j - i)
        rows, cols, values = cooccurrence(ids, sentence_ids, window, vocab_size=len(words))
        got = {(r, c): v for r, c, v in zip(rows.tolist(), cols.tolist(), values.tolist())}
        assert got.keys() == expected.keys()
        for key, v in expected.items():
            assert got[key] == pytest.approx(v, rel=1e-6)


def test_glove_loss_matches_formula():
    for seed in range(10):
        torch.manual_seed(seed)
        model = GloVe(12, 4, x_max=float(seed + 2), alpha=0.5 + seed / 20).double()
        for p in model.parameters():
            torch.nn.init.normal_(p)
        rows, cols = torch.randint(0, 12, (20,)), torch.randint(0, 12, (20,))
        counts = torch.rand(20, dtype=torch.float64) * 3 * (seed + 2) + 0.1
        w, wt = model.w.weight.tolist(), model.w_tilde.weight.tolist()
        b, bt = model.b.weight[:, 0].tolist(), model.b_tilde.weight[:, 0].tolist()
        total = 0.0
        for i, j, x in zip(rows.tolist(), cols.tolist(), counts.tolist()):
            f = min(1.0, (x / model.x_max) ** model.alpha)
            total += f * (np.dot(w[i], wt[j]) + b[i] + bt[j] - math.log(x)) ** 2
        assert glove_step(model, (rows, cols, counts)).item() == pytest.approx(total / 20, rel=1e-9)


def test_glove_through_fit_learns_topics():
    from aigc_lib.core.training import fit

    torch.manual_seed(0)
    sentences = topic_corpus(seed=2)
    words, _ = build_vocab(sentences)
    ids, sentence_ids = encode_corpus(sentences, words)
    rows, cols, counts = cooccurrence(ids, sentence_ids, window=3)
    assert rows.numel() > 0
    assert all(words[r][0] == words[c][0] for r, c in zip(rows.tolist(), cols.tolist()))
    model = GloVe(len(words), 16, x_max=10.0)
    initial = glove_step(model, (rows, cols, counts)).item()
    fit(
        model,
        TensorBatches(rows, cols, counts, batch_size=64),
        epochs=60,
        step=glove_step,
        optimizer=torch.optim.Adagrad(model.parameters(), lr=0.1),
        device="cpu",
        progress=False,
    )
    assert glove_step(model, (rows, cols, counts)).item() < 0.2 * initial
    assert within_minus_across(WordVectors(words, model.vectors())) > 0.3


def test_tensor_batches_cover_every_row_once_per_epoch():
    data = torch.arange(103)
    batches = TensorBatches(data, data * 2, batch_size=10, seed=0)
    assert len(batches) == 11
    epochs = []
    for _ in range(3):
        seen = [(a, b) for x, y in batches for a, b in zip(x.tolist(), y.tolist())]
        assert all(b == 2 * a for a, b in seen)
        assert sorted(a for a, _ in seen) == list(range(103))
        epochs.append([a for a, _ in seen])
    assert epochs[0] != epochs[1]
    with pytest.raises(ValueError, match="第 0 维"):
        TensorBatches(data, data[:5], batch_size=4)


# --- WordVectors：对照 gensim ----------------------------------------------


def random_vectors(seed, V=60, D=8):
    gen = torch.Generator().manual_seed(seed)
    words = [f"词{i}" for i in range(V)]
    return WordVectors(words, torch.randn(V, D, generator=gen))


def gensim_vectors(wv):
    from gensim.models import KeyedVectors

    kv = KeyedVectors(vector_size=wv.vectors.shape[1])
    kv.add_vectors(wv.words, wv.vectors.numpy())
    return kv


def test_queries_match_gensim():
    for seed in range(10):
        wv = random_vectors(seed)
        kv = gensim_vectors(wv)
        rng = random.Random(seed)
        for _ in range(5):
            a, b, c = rng.sample(wv.words, 3)
            ours, theirs = wv.most_similar(a, k=7), kv.most_similar(a, topn=7)
            assert [w for w, _ in ours] == [w for w, _ in theirs]
            assert [s for _, s in ours] == pytest.approx([s for _, s in theirs], abs=1e-5)
            ours = wv.analogy(a, b, c, k=5)
            theirs = kv.most_similar(positive=[b, c], negative=[a], topn=5)
            assert [w for w, _ in ours] == [w for w, _ in theirs]
            assert [s for _, s in ours] == pytest.approx([s for _, s in theirs], abs=1e-5)
            assert wv.similarity(a, b) == pytest.approx(float(kv.similarity(a, b)), abs=1e-5)
    with pytest.raises(KeyError, match="不在词表"):
        wv.most_similar("没有这个词")


def test_embedding_matrix_rescales_known_words_and_fills_the_rest():
    for seed in range(8):
        wv = random_vectors(seed)
        scale = 0.05 + 0.3 * seed  # 原始向量的尺度各不相同，输出的尺度只由 std 决定
        wv = WordVectors(wv.words, wv.vectors * scale)
        rng = random.Random(seed)
        known = rng.sample(wv.words, 6)
        words = ["<pad>", "<unk>", *known[:3], "没见过的词", *known[3:]]
        std = [1.0, 0.5, 2.0][seed % 3]
        matrix = wv.embedding_matrix(words, std=std, seed=seed)
        assert matrix.shape == (len(words), wv.vectors.size(1)) and matrix.dtype == torch.float32
        assert torch.count_nonzero(matrix[0]) == 0  # <pad> 行是 0
        for i, word in enumerate(words):
            if word in wv:
                original = wv[word]
                # 方向不变（余弦为 1），各分量的标准差正好是 std
                assert torch.nn.functional.cosine_similarity(matrix[i], original, dim=0) == pytest.approx(1, abs=1e-5)
                assert (matrix[i] / original).min() > 0
                assert matrix[i].std().item() == pytest.approx(std, rel=1e-4)
        missing = [i for i, w in enumerate(words) if w not in wv and i != 0]
        assert all(torch.count_nonzero(matrix[i]) == matrix.size(1) for i in missing)
        # 缺失行是由种子决定的随机数：同种子相同，换种子不同；padding_idx=None 时第 0 行也是随机数
        assert torch.equal(matrix, wv.embedding_matrix(words, std=std, seed=seed))
        other = wv.embedding_matrix(words, std=std, seed=seed + 100, padding_idx=None)
        assert not torch.equal(other[missing], matrix[missing]) and torch.count_nonzero(other[0]) > 0
        known_rows = [i for i, w in enumerate(words) if w in wv]
        assert torch.equal(other[known_rows], matrix[known_rows])
    assert wv.embedding_matrix(["都不在", "词表里"], padding_idx=None).std().item() > 0.5


def test_word2vec_format_round_trip_with_gensim(tmp_path):
    from gensim.models import KeyedVectors

    for seed in range(5):
        wv = random_vectors(seed, V=30 + seed, D=5 + seed)
        ours = tmp_path / f"ours{seed}.txt"
        wv.save_word2vec_format(ours)
        back = WordVectors.load_word2vec_format(ours)
        assert back.words == wv.words and torch.equal(back.vectors, wv.vectors)

        kv = KeyedVectors.load_word2vec_format(str(ours), binary=False)
        assert list(kv.index_to_key) == wv.words
        np.testing.assert_array_equal(kv.vectors, wv.vectors.numpy())

        theirs = tmp_path / f"gensim{seed}.txt"
        gensim_vectors(wv).save_word2vec_format(str(theirs), binary=False)
        from_gensim = WordVectors.load_word2vec_format(theirs)
        assert from_gensim.words == wv.words and torch.equal(from_gensim.vectors, wv.vectors)


def test_word2vec_format_errors(tmp_path):
    with pytest.raises(ValueError, match="空白"):
        WordVectors(["a b", "c"], torch.zeros(2, 3)).save_word2vec_format(tmp_path / "x.txt")
    bad = tmp_path / "bad.txt"
    bad.write_text("2 3\n北京 1 2 3\n上海 1 2\n", encoding="utf-8")
    with pytest.raises(ValueError, match="第 3 行"):
        WordVectors.load_word2vec_format(bad)
    bad.write_text("北京 1 2 3\n", encoding="utf-8")
    with pytest.raises(ValueError, match="第 1 行"):
        WordVectors.load_word2vec_format(bad)
    with pytest.raises(ValueError, match="重复"):
        WordVectors(["a", "a"], torch.zeros(2, 3))


def test_models_give_their_word_vectors_as_tensors():
    torch.manual_seed(0)
    skipgram, glove = SkipGram(7, 4), GloVe(7, 4)
    torch.testing.assert_close(skipgram.vectors(), skipgram.in_embed.weight.detach())
    torch.testing.assert_close(glove.vectors(), glove.w.weight.detach() + glove.w_tilde.weight.detach())
    assert not skipgram.vectors().requires_grad and not glove.vectors().requires_grad
