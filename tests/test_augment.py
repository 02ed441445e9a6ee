"""augment：同一个 seed 结果相同、不同 seed 结果不同，标签不变，删除永远不会删空。"""

import doctest
import random
from collections import Counter

import pytest

import aigc_lib.data.augment as augment_module
from aigc_lib.data.augment import (
    augment_dataset,
    augment_tokens,
    random_deletion,
    random_swap,
    synonym_replacement,
)

WORDS = ["这家", "餐厅", "的", "菜", "很", "好吃", "服务", "也", "不错", "下次", "还", "来"]


def random_sentences(seed, count=50):
    """长度 1 到 12 的随机词序列。"""
    g = random.Random(seed)
    return [[g.choice(WORDS) for _ in range(g.randint(1, 12))] for _ in range(count)]


SYNONYMS = {"好吃": ["美味", "可口"], "不错": ["很好", "挺好"], "餐厅": ["饭店"], "菜": ["菜品", "菜肴"]}


def test_docstring_examples_run():
    assert doctest.testmod(augment_module, extraglobs={"random": random}).failed == 0


def test_deletion_never_returns_empty_and_only_removes_words():
    for seed in range(200):
        rng = random.Random(seed)
        sentence = random_sentences(seed, 1)[0]
        for p in (0.0, 0.3, 0.9, 1.0):
            out = random_deletion(sentence, p, rng)
            assert 1 <= len(out) <= len(sentence)
            # 剩下的词保持原来的相对顺序：out 是 sentence 的子序列
            it = iter(sentence)
            assert all(word in it for word in out)
        assert random_deletion(sentence, 0.0, rng) == sentence
    assert random_deletion([], 0.5, random.Random(0)) == []


def test_deletion_rate_is_close_to_p():
    rng = random.Random(0)
    sentence = list(range(20))
    kept = sum(len(random_deletion([str(x) for x in sentence], 0.3, rng)) for _ in range(2000))
    assert abs(1 - kept / (20 * 2000) - 0.3) < 0.01


def test_swap_keeps_words_and_length():
    for seed in range(200):
        sentence = random_sentences(seed, 1)[0]
        for n in (0, 1, 3):
            out = random_swap(sentence, n, random.Random(seed))
            assert Counter(out) == Counter(sentence) and len(out) == len(sentence)
        assert random_swap(sentence, 0, random.Random(seed)) == sentence
    # 两个词交换一次一定互换位置
    assert random_swap(["甲", "乙"], 1, random.Random(5)) == ["乙", "甲"]


def test_synonym_replacement_uses_only_neighbours_and_at_most_n_positions():
    for seed in range(200):
        sentence = random_sentences(seed, 1)[0]
        for n in (0, 1, 2, 5):
            out = synonym_replacement(sentence, n, SYNONYMS, random.Random(seed))
            assert len(out) == len(sentence)
            changed = [(a, b) for a, b in zip(sentence, out) if a != b]
            replaceable = sum(word in SYNONYMS for word in sentence)
            assert len(changed) == min(n, replaceable)  # 每个候选都不同于原词，所以换了就一定变
            assert all(b in SYNONYMS[a] for a, b in changed)


def test_synonym_replacement_accepts_gensim_style_callables():
    def most_similar(word, topn=5):  # 模拟 gensim：返回 (词, 相似度)，词表外抛 KeyError
        if word not in SYNONYMS:
            raise KeyError(word)
        return [(w, 0.9) for w in SYNONYMS[word]][:topn] + [(word, 1.0)]

    for seed in range(50):
        sentence = random_sentences(seed, 1)[0]
        from_dict = synonym_replacement(sentence, 2, SYNONYMS, random.Random(seed))
        from_callable = synonym_replacement(sentence, 2, most_similar, random.Random(seed))
        assert from_callable == from_dict


def test_synonym_replacement_with_real_word_vectors():
    gensim_models = pytest.importorskip("gensim.models")
    kv = gensim_models.KeyedVectors(vector_size=3)
    kv.add_vectors(["好吃", "美味", "难吃"], [[1.0, 0.0, 0.0], [0.99, 0.1, 0.0], [-1.0, 0.0, 0.0]])
    out = synonym_replacement(["菜", "很", "好吃"], 1, lambda w: kv.most_similar(w, topn=1), random.Random(0))
    assert out == ["菜", "很", "美味"]


@pytest.mark.parametrize("ops", [("delete",), ("swap",), ("synonym",), ("delete", "swap", "synonym")])
def test_augment_is_reproducible_and_seed_dependent(ops):
    sentences = random_sentences(1, 30)
    kwargs = dict(ops=ops, p_delete=0.3, n_swap=2, n_synonym=2, neighbours=SYNONYMS)
    for seed in range(20):
        random.seed(seed)  # 全局随机状态不影响结果……
        first = [augment_tokens(s, seed=seed, **kwargs) for s in sentences]
        state = random.getstate()
        second = [augment_tokens(s, seed=seed, **kwargs) for s in sentences]
        assert random.getstate() == state  # ……也不被消耗
        assert first == second
        other = [augment_tokens(s, seed=seed + 1000, **kwargs) for s in sentences]
        assert other != first


def test_augment_strings_are_split_into_characters_and_joined_back():
    text = "这家餐厅的菜很好吃"
    for seed in range(50):
        out = augment_tokens(text, ops=("swap",), seed=seed)
        assert isinstance(out, str) and sorted(out) == sorted(text)
        assert augment_tokens(list(text), ops=("swap",), seed=seed) == list(out)


def test_augment_does_not_modify_the_input():
    sentence = list(WORDS)
    augment_tokens(sentence, ops=("delete", "swap", "synonym"), seed=0, neighbours=SYNONYMS, p_delete=0.5)
    assert sentence == WORDS


def test_augment_rejects_bad_arguments_with_chinese_messages():
    with pytest.raises(ValueError, match="neighbours"):
        augment_tokens(WORDS, ops=("synonym",), seed=0)
    with pytest.raises(ValueError, match="未知的增强操作"):
        augment_tokens(WORDS, ops=("insert",), seed=0)
    with pytest.raises(ValueError, match="恰好传一个"):
        augment_tokens(WORDS)
    with pytest.raises(ValueError, match="概率"):
        random_deletion(WORDS, 1.5, random.Random(0))


def test_augment_dataset_keeps_labels_and_order_and_is_reproducible():
    texts = ["".join(s) for s in random_sentences(2, 40)]
    pairs = [(t, i % 3) for i, t in enumerate(texts)]
    for k in (0, 1, 3):
        out = augment_dataset(pairs, k=k, seed=0, ops=("delete", "swap"), p_delete=0.2)
        assert len(out) == len(pairs) * (k + 1)
        for i, (text, label) in enumerate(pairs):
            block = out[i * (k + 1) : (i + 1) * (k + 1)]
            assert block[0] == (text, label)  # 原样本在前
            assert all(new_label == label and isinstance(new_text, str) and new_text for new_text, new_label in block)
        assert out == augment_dataset(pairs, k=k, seed=0, ops=("delete", "swap"), p_delete=0.2)
    assert augment_dataset(pairs, k=2, seed=0) != augment_dataset(pairs, k=2, seed=1)
    only_new = augment_dataset(pairs, k=2, seed=0, keep_original=False)
    assert len(only_new) == 2 * len(pairs)


def test_augment_dataset_with_a_tokenizer_and_token_lists():
    pairs = [("这家餐厅的菜很好吃", 1), ("服务不错", 0)]
    tokenize = lambda text: [w for w in WORDS if w in text] or list(text)  # noqa: E731 一个假的切词器
    out = augment_dataset(pairs, k=2, seed=3, ops=("synonym",), neighbours=SYNONYMS, tokenize=tokenize)
    assert [label for _, label in out] == [1, 1, 1, 0, 0, 0]
    assert all(text != pairs[0][0] for text, _ in out[1:3])  # 有可替换的词，所以一定变了
    lists = augment_dataset([(WORDS, 1)], k=1, seed=0, ops=("swap",))
    assert isinstance(lists[1][0], list) and Counter(lists[1][0]) == Counter(WORDS)
    with pytest.raises(ValueError, match="text, label"):
        augment_dataset([("只有文本",)], k=1)
