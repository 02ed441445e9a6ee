"""aigc_lib.data.batching：补齐、组批、长度分桶采样器、make_loader。

参照物是逐条的暴力计算（Python 列表），在很多随机输入上对照。
"""

import pickle
import random
from collections import Counter

import pytest
import torch

from aigc_lib.data.batching import BucketBatchSampler, EncodedDataset, make_loader, pad_batch, pad_collate


def random_sequences(rng: random.Random, n: int, max_len: int = 30, vocab: int = 100, allow_empty: bool = True):
    low = 0 if allow_empty else 1
    return [[rng.randrange(1, vocab) for _ in range(rng.randint(low, max_len))] for _ in range(n)]


def test_pad_batch_matches_brute_force():
    for seed in range(200):
        rng = random.Random(seed)
        seqs = random_sequences(rng, rng.randint(1, 12))
        pad_id = rng.choice([0, 0, 7])
        max_tokens = rng.choice([None, None, rng.randint(1, 20)])
        tokens, lengths = pad_batch(seqs, pad_id=pad_id, max_tokens=max_tokens)

        kept = [s[:max_tokens] if max_tokens else s for s in seqs]
        width = max(1, max(len(s) for s in kept))
        expected = [s + [pad_id] * (width - len(s)) for s in kept]
        assert tokens.dtype == torch.long and lengths.dtype == torch.long
        assert tokens.tolist() == expected
        assert lengths.tolist() == [len(s) for s in kept]


def test_pad_batch_accepts_tensors_and_rejects_bad_max_tokens():
    tokens, lengths = pad_batch([torch.tensor([3, 4]), torch.tensor([5])])
    assert tokens.tolist() == [[3, 4], [5, 0]] and lengths.tolist() == [2, 1]
    with pytest.raises(ValueError, match="max_tokens"):
        pad_batch([[1, 2]], max_tokens=0)


def test_pad_collate_layout_and_label_dtypes():
    rng = random.Random(0)
    for _ in range(50):
        seqs = random_sequences(rng, rng.randint(1, 8), allow_empty=False)
        int_labels = [rng.randrange(3) for _ in seqs]
        tokens, lengths, labels = pad_collate(list(zip(seqs, int_labels)))
        assert tokens.shape == (len(seqs), max(map(len, seqs)))
        assert labels.dtype == torch.long and labels.tolist() == int_labels
        assert lengths.tolist() == [len(s) for s in seqs]

        float_labels = [float(y) for y in int_labels]
        assert pad_collate(list(zip(seqs, float_labels)))[2].dtype == torch.float32
        assert pad_collate(list(zip(seqs, int_labels)), label_dtype=torch.float32)[2].dtype == torch.float32


def test_encoded_dataset():
    ds = EncodedDataset([[1, 2, 3], [4]], [0, 1])
    assert len(ds) == 2 and ds[0] == ([1, 2, 3], 0) and ds.lengths == [3, 1]
    assert EncodedDataset.from_pairs([([1, 2, 3], 0), ([4], 1)]).lengths == [3, 1]
    with pytest.raises(ValueError, match="labels"):
        EncodedDataset([[1], [2]], [0])


def sampler_cases():
    rng = random.Random(1)
    for _ in range(60):
        n = rng.randint(1, 400)
        yield dict(
            lengths=[rng.randint(0, 60) for _ in range(n)],
            batch_size=rng.randint(1, 40),
            bucket_size=rng.randint(1, 8),
            drop_last=rng.random() < 0.3,
            shuffle=rng.random() < 0.7,
            seed=rng.randrange(1000),
        )


def test_bucket_sampler_covers_every_index_once_and_len_is_right():
    for case in sampler_cases():
        sampler = BucketBatchSampler(**case)
        n, bs = len(case["lengths"]), case["batch_size"]
        for _ in range(2):  # 两个 epoch
            batches = list(sampler)
            assert len(batches) == len(sampler)
            assert all(1 <= len(b) <= bs for b in batches)
            seen = Counter(i for b in batches for i in b)
            assert all(count == 1 for count in seen.values())
            if case["drop_last"]:
                assert len(seen) == (n // bs) * bs and all(len(b) == bs for b in batches)
            else:
                assert set(seen) == set(range(n))


def test_bucket_sampler_sorts_within_chunks_without_shuffle():
    for case in sampler_cases():
        case.update(shuffle=False, drop_last=False)
        lengths = case["lengths"]
        order = [i for b in BucketBatchSampler(**case) for i in b]
        chunk = case["batch_size"] * case["bucket_size"]
        for start in range(0, len(order), chunk):
            block = order[start : start + chunk]
            assert sorted(block) == list(range(start, start + len(block)))  # 块按原顺序划分
            assert [lengths[i] for i in block] == sorted(lengths[i] for i in block)


def test_bucket_sampler_reshuffles_with_set_epoch_and_is_reproducible():
    rng = random.Random(2)
    lengths = [rng.randint(1, 100) for _ in range(500)]
    sampler = BucketBatchSampler(lengths, batch_size=16, bucket_size=4, seed=3)
    orders = {}
    for epoch in range(5):
        sampler.set_epoch(epoch)
        orders[epoch] = list(sampler)
    for epoch in range(5):
        sampler.set_epoch(epoch)
        assert list(sampler) == orders[epoch]  # 同一 epoch，同一顺序
        again = BucketBatchSampler(lengths, batch_size=16, bucket_size=4, seed=3)
        again.set_epoch(epoch)
        assert list(again) == orders[epoch]  # 新建的采样器也一样（只由 seed 和 epoch 决定）
    assert len({str(o) for o in orders.values()}) == 5  # 不同 epoch，不同顺序
    # 不调用 set_epoch，连续遍历也会换顺序
    fresh = BucketBatchSampler(lengths, batch_size=16, bucket_size=4, seed=3)
    assert list(fresh) == orders[0] and list(fresh) == orders[1]
    other_seed = BucketBatchSampler(lengths, batch_size=16, bucket_size=4, seed=4)
    assert list(other_seed) != orders[0]


def padded_cells(batches, lengths):
    return sum(len(b) * max(lengths[i] for i in b) for b in batches)


def test_bucketing_pads_less_than_random_batches():
    for seed in range(10):
        rng = random.Random(seed)
        lengths = [rng.randint(1, 200) for _ in range(1000)]
        bucketed = list(BucketBatchSampler(lengths, batch_size=32, seed=seed))
        order = list(range(1000))
        rng.shuffle(order)
        plain = [order[i : i + 32] for i in range(0, 1000, 32)]
        # 分桶后补齐的格子数应明显少于随机分批
        assert padded_cells(bucketed, lengths) < 0.8 * padded_cells(plain, lengths)


def test_bucket_sampler_shards_across_replicas():
    for case in sampler_cases():
        for world in (2, 3):
            shards = []
            for rank in range(world):
                sampler = BucketBatchSampler(**case, num_replicas=world, rank=rank)
                sampler.set_epoch(5)
                shards.append(list(sampler))
                assert len(shards[-1]) == len(sampler)
            assert len({len(s) for s in shards}) == 1  # 每个进程批数相同
            single = BucketBatchSampler(**case)
            single.set_epoch(5)
            expected = {i for b in single for i in b}
            assert {i for s in shards for b in s for i in b} == expected


def test_make_loader_yields_padded_batches_covering_the_data():
    rng = random.Random(5)
    for _ in range(20):
        seqs = random_sequences(rng, rng.randint(1, 120), allow_empty=False)
        labels = [rng.randrange(2) for _ in seqs]
        pairs = list(zip(seqs, labels))
        batch_size = rng.randint(1, 16)
        for shuffle in (False, True):
            for bucket in (None, True, False):
                loader = make_loader(pairs, batch_size=batch_size, shuffle=shuffle, bucket=bucket)
                seen = []
                for tokens, lengths, ys in loader:
                    assert tokens.dtype == torch.long and tokens.dim() == 2
                    assert tokens.shape[0] == lengths.shape[0] == ys.shape[0] <= batch_size
                    assert tokens.shape[1] == int(lengths.max())  # 补到本批最长
                    for row, n, y in zip(tokens.tolist(), lengths.tolist(), ys.tolist()):
                        assert all(t == 0 for t in row[n:])
                        seen.append((tuple(row[:n]), y))
                assert len(loader) == -(-len(pairs) // batch_size)
                assert Counter(seen) == Counter((tuple(s), y) for s, y in pairs)
                if not shuffle and not bucket:
                    assert seen == [(tuple(s), y) for s, y in pairs]  # 评估时保持原顺序


def test_make_loader_defaults_are_windows_safe():
    ds = EncodedDataset([[1, 2], [3]], [0.0, 1.0])
    loader = make_loader(ds, batch_size=2, shuffle=True, pad_id=9, label_dtype=torch.float32)
    assert loader.num_workers == 0
    assert loader.pin_memory == torch.cuda.is_available()
    assert isinstance(loader.batch_sampler, BucketBatchSampler)
    # Windows 用 spawn 启动子进程，数据集和 collate_fn 都要能被 pickle
    collate = pickle.loads(pickle.dumps(loader.collate_fn))
    tokens, lengths, labels = collate([ds[0], ds[1]])
    assert tokens.tolist() == [[1, 2], [3, 9]] and labels.dtype == torch.float32
    pickle.loads(pickle.dumps(ds))
    with pytest.raises(ValueError, match="空"):
        make_loader([], batch_size=2)


def test_make_loader_distributed_true_needs_an_initialized_group():
    """distributed=True 是"一定要按进程切分"：没有 torchrun / init_process_group 时说清楚，而不是悄悄不切分。"""
    data = [([1, 2, 3], 0), ([4], 1)]
    with pytest.raises(RuntimeError, match="torch.distributed 还没有初始化"):
        make_loader(data, batch_size=2, distributed=True)
    for distributed in (None, False):  # 默认：没有初始化就不切分；False：从不切分
        assert sum(len(labels) for _, _, labels in make_loader(data, batch_size=1, distributed=distributed)) == 2
