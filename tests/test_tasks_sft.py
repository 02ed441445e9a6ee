"""指令微调任务 sft：对话模板、只在回答上算损失、划分不重叠、从 lm-gpt 出发、aigc chat 的边界情况。"""

import json
import random
import signal
import subprocess
import sys
import time

import pytest
import torch
import torch.nn.functional as F

from aigc_lib import pretrained, segmentation_prf
from aigc_lib.cli import main
from aigc_lib.tasks import TASKS, load_run
from aigc_lib.compress import count_parameters
from aigc_lib.tasks.sft import (ASSISTANT, SPECIAL_TOKENS, USER, Example, chat_tokens, chat_vocab, conversations,
                                encode_conversation, extend_rows, pad_conversations, parse_chat, render_chat, score,
                                word_spans)
from aigc_lib.tasks.pinyin.data import clause_texts, pinyin_pairs
from aigc_lib.tasks.sft.data import (ENTITY_NAMES, NO_ENTITY, _sources, instruction_examples, reading_groups,
                                     sentence_text, syllables)
from aigc_lib.tasks.sft.scoring import Baseline
from aigc_lib.tasks.sft.task import build_chat_gpt
from _cli import cli_env, run_aigc

CHARS = "我们爱北京天安门，。正负面abinjt "


def tokens_by_brute_force(text: str) -> int:
    """不用正则数 token：特殊标记 1 个；一串连续的小写字母，是音节就 1 个，否则每个字母 1 个；其余每字 1 个。"""
    count, i = 0, 0
    while i < len(text):
        special = next((t for t in SPECIAL_TOKENS if text.startswith(t, i)), None)
        if special:
            count, i = count + 1, i + len(special)
        elif "a" <= text[i] <= "z":
            j = i
            while j < len(text) and "a" <= text[j] <= "z":
                j += 1
            count, i = count + (1 if text[i:j] in syllables() else j - i), j
        else:
            count, i = count + 1, i + 1
    return count


def random_chat(rng: random.Random) -> list[tuple[str, str]]:
    """随机的对话：1–4 轮，内容是随机的字（可以为空），最后可能停在用户的话上。"""
    messages = []
    for _ in range(rng.randint(1, 4)):
        messages.append(("user", "".join(rng.choice(CHARS) for _ in range(rng.randint(0, 8)))))
        messages.append(("assistant", "".join(rng.choice(CHARS) for _ in range(rng.randint(0, 8)))))
    return messages[:-1] if rng.random() < 0.3 else messages


@pytest.fixture(scope="module")
def vocab():
    return chat_vocab(pretrained("lm-gpt").vocab.itos)


def test_template_round_trip():
    rng = random.Random(0)
    for _ in range(300):
        messages = random_chat(rng)
        text = render_chat(messages)
        assert parse_chat(text) == messages
        tokens = chat_tokens(text)
        assert len(tokens) == sum(tokens_by_brute_force(content) + 2 for _, content in messages)  # 标记 + 内容 + <|end|>
        assert len(tokens) == tokens_by_brute_force(text)
        assert "".join(tokens) == text
        assert render_chat(messages, add_generation_prompt=True) == text + ASSISTANT
    with pytest.raises(ValueError, match="<\\|end\\|>"):
        parse_chat(USER + "你好")


def answer_positions_by_brute_force(tokens: list[str]) -> list[bool]:
    """逐个 token 往回找最近的角色标记：它是 <|assistant|>、且这个 token 本身不是角色标记，就是回答的一部分。"""
    flags = []
    for i, token in enumerate(tokens):
        roles = [t for t in tokens[:i] if t in (USER, ASSISTANT)]
        flags.append(token not in (USER, ASSISTANT) and bool(roles) and roles[-1] == ASSISTANT)
    return flags


def test_loss_mask_covers_exactly_the_answer_tokens(vocab):
    rng = random.Random(1)
    for _ in range(200):
        messages = random_chat(rng)
        ids, labels = encode_conversation(messages, vocab)
        tokens = chat_tokens(render_chat(messages))
        assert ids == vocab.encode(tokens)
        expected = answer_positions_by_brute_force(tokens)
        assert [label != -100 for label in labels] == expected
        assert all(label == i for label, i, keep in zip(labels, ids, expected) if keep)
        n_answer_tokens = sum(tokens_by_brute_force(c) + 1 for role, c in messages if role == "assistant")  # 内容 + <|end|>
        assert sum(expected) == n_answer_tokens


def test_masked_loss_equals_mean_over_answer_tokens_by_hand(vocab):
    """pad_conversations + 交叉熵（忽略 -100）= 只在回答位置上 -log p 的平均；补齐的位置不影响结果。"""
    rng = random.Random(2)
    torch.manual_seed(0)
    logits_table = torch.randn(len(vocab), len(vocab))  # 一个"模型"：下一个 token 的 logits 只看当前 token
    for _ in range(20):
        chats = [random_chat(rng) for _ in range(rng.randint(1, 5))]
        encoded = [encode_conversation(c, vocab) for c in chats]
        x, y = pad_conversations(encoded)
        loss = F.cross_entropy(logits_table[x].flatten(0, 1), y.flatten())
        terms = []
        for ids, labels in encoded:
            for t in range(len(ids) - 1):
                if labels[t + 1] != -100:
                    terms.append(-torch.log_softmax(logits_table[ids[t]], -1)[labels[t + 1]])
        if terms:
            torch.testing.assert_close(loss, torch.stack(terms).mean())


def test_every_syllable_of_the_pinyin_corpus_is_one_token(vocab):
    """拼音任务训练语料里出现的每个音节都是音节表里的一个 token；拼音指令的提示里，音节一个 token、空格一个 token。"""
    pairs = pinyin_pairs("train", max_chars=12, limit=3000)
    seen = {s for syllable_list, _ in pairs for s in syllable_list}
    assert seen <= syllables()
    assert all(vocab.encode([s]) != vocab.encode(["<unk>"]) for s in syllables())
    for syllable_list, _ in pairs[:300]:
        text = " ".join(syllable_list)
        assert chat_tokens(text) == [t for s in syllable_list for t in (s, " ")][:-1]
    assert not {"iphone", "ipad", "abc"} & syllables()


def test_syllable_rows_start_at_the_mean_of_their_characters(vocab):
    """音节 token 的初始词向量 = 读这个音的原有汉字的词向量的平均；读音用 pinyin_pairs 的注音独立核对。"""
    base = pretrained("lm-gpt")
    model = build_chat_gpt({"dropout": 0.0, "lora_rank": 0, "lora_alpha": 16.0, "lora_dropout": 0.0},
                           {"vocab": list(vocab.itos)})
    rows, old = model.embedding.weight.detach(), base.model.embedding.weight.detach().float()
    groups = reading_groups(base.vocab.itos)
    # 语料里注成 s 的字（按词注音，多音字也对）都在 groups[s] 里
    for syllable_list, text in pinyin_pairs("train", max_chars=12, limit=1000):
        for s, ch in zip(syllable_list, text):
            if ch in base.vocab and s in groups:
                assert base.vocab[ch] in groups[s], (s, ch)
    n_base = len(base.vocab)
    checked = 0
    for index in range(n_base, len(vocab)):
        token = vocab.itos[index]
        if len(token) > 1 and token in groups:
            torch.testing.assert_close(rows[index], old[groups[token]].mean(0))
            checked += 1
    assert checked == sum(1 for t in vocab.itos[n_base:] if len(t) > 1 and t in groups) > 300
    torch.testing.assert_close(rows[:n_base], old)


def test_splits_share_no_source_sentence():
    """不分种类：一份里的原文不出现在另一份里。拼音只注音前 300 个小句，所以前面几份的拼音原文用
    全部小句（clause_texts，它包含任何 limit 下可能用到的小句）来比。"""
    sources = {}
    for split in ("train", "val", "test"):
        items = _sources(split, pinyin_limit=300)
        texts = {t for t, _ in items["sentiment"]} | {text for _, text in items["pinyin"]}
        texts |= {sentence_text(s) for kind in ("segment", "ner", "continue") for s in items[kind]}
        sources[split] = texts
    every_train_clause = sources["train"] | clause_texts("train")
    assert not every_train_clause & sources["val"]
    assert not every_train_clause & sources["test"]
    assert not (sources["val"] | clause_texts("val")) & sources["test"]
    assert min(map(len, sources.values())) > 1000
    assert {"日本", "李鹏"} <= clause_texts("train")  # 这样的短标题正是跨种类重复的来源


def test_extend_rows_keeps_old_rows_and_puts_new_ones_near_the_mean():
    for seed in range(5):
        weight = torch.randn(50, 8, generator=torch.Generator().manual_seed(seed)) * 3
        extended = extend_rows(weight, 4, seed)
        assert torch.equal(extended[:50], weight)
        assert (extended[50:] - weight.mean(0)).abs().max() < 0.2
        assert len({tuple(r.tolist()) for r in extended[50:]}) == 4  # 新行彼此不同


@pytest.mark.parametrize("rank", [0, 4])
def test_fine_tuning_starts_from_lm_gpt(vocab, rank):
    """刚搭好的 SFT 模型在旧字上的 logits 与 lm-gpt 相同（新 token 只是多出的几列）；LoRA 时只有 A、B 可训练。"""
    base = pretrained("lm-gpt").model
    sizes = {"dropout": 0.0, "lora_rank": rank, "lora_alpha": 8.0, "lora_dropout": 0.0}
    model = build_chat_gpt(sizes, {"vocab": list(vocab.itos)}).eval()
    V = base.config["vocab_size"]
    tokens = torch.randint(0, V, (3, 40), generator=torch.Generator().manual_seed(rank))
    with torch.no_grad():
        torch.testing.assert_close(model(tokens)[..., :V], base(tokens), atol=1e-4, rtol=1e-4)
    # 遗忘的量法：lm 任务的 evaluate 直接用 SFT 的词表（前面的编号与 lm-gpt 相同）。刚搭好时旧字的 logits
    # 相同，只是新 token 分走了一点概率，所以困惑度略高：音节 token 的词向量在读这个音的字旁边，分走的
    # 比"平均向量"多，实测约 1.6%（3% 以内）
    lm = pretrained("lm-gpt").evaluate("test", limit=3)["perplexity"]
    sft_config = {"model": "gpt", "artifacts": {"vocab": list(vocab.itos), "context_len": 128}}
    ours = TASKS["lm"].evaluate(model, sft_config, "test", "cpu", limit=3)["perplexity"]
    assert lm < ours < lm * 1.03
    trainable, total = count_parameters(model, trainable_only=True), count_parameters(model)
    if rank:
        assert all(n.endswith(("lora_A", "lora_B")) or n == "embedding.new"
                   for n, p in model.named_parameters() if p.requires_grad)
        # 4 层，每层 4 个 128×128 投影（r·256）和前馈的 128->512、512->128（各 r·640），加上新 token 的词向量
        assert trainable == 4 * rank * (4 * 256 + 2 * 640) + (len(vocab) - V) * 128
    else:
        assert trainable == total


def test_segment_score_equals_segmentation_prf():
    rng = random.Random(3)
    for _ in range(200):
        golds, preds = [], []
        for _ in range(rng.randint(1, 4)):
            text = "".join(rng.choice("我们爱北京天安门") for _ in range(rng.randint(1, 12)))
            golds.append(random_words(text, rng))
            preds.append(random_words(text, rng))
        expected = segmentation_prf(golds, preds)[2]
        assert score("segment", [" ".join(g) for g in golds], [" ".join(p) for p in preds]) == pytest.approx(expected)


def random_words(text: str, rng: random.Random) -> list[str]:
    cuts = sorted(rng.sample(range(1, len(text)), rng.randint(0, len(text) - 1))) if len(text) > 1 else []
    return [text[a:b] for a, b in zip([0] + cuts, cuts + [len(text)])]


def test_conversations_fit_the_context_and_use_each_example_once():
    examples = [Example("sentiment", "判" * rng_len, "正面", f"s{i}") for i, rng_len in
                enumerate(random.Random(4).choices(range(1, 60), k=300))]
    for multi_turn in (0.0, 0.5, 0.9):
        chats = conversations(examples, max_tokens=100, multi_turn=multi_turn, seed=1)
        assert all(len(chat_tokens(render_chat(c))) <= 100 for c in chats)
        prompts = [text for c in chats for role, text in c if role == "user"]
        assert sorted(prompts) == sorted(e.prompt for e in examples)  # 每条都放得下：一条不少、一条不多
        turns = [len(c) // 2 for c in chats]
        assert (max(turns) == 1) == (multi_turn == 0.0) and max(turns) <= 3


def test_scores_by_hand():
    assert score("sentiment", ["正面", "负面", "正面"], ["正面", "正面", " 正面 "]) == pytest.approx(2 / 3)
    # 分词：标准 {我们, 爱, 北京}，预测 {我, 们, 爱, 北京}：对 2 个，F1 = 2·2 / (3 + 4)
    assert score("segment", ["我们 爱 北京"], ["我 们 爱 北京"]) == pytest.approx(4 / 7)
    assert sorted(word_spans(["ab", "c"])) == [(0, 2), (2, 3)]
    assert score("ner", ["人名：江泽民；地名：北京", "没有"], ["人名：江泽民、李鹏", "没有"]) == pytest.approx(2 / 4)
    assert score("pinyin", ["我们爱北京"], ["我们爱背景"]) == pytest.approx(3 / 5)


def test_ner_score_edge_cases():
    assert score("ner", ["没有", "没有"], ["没有", "  没有 "]) == 1.0  # 两边都没有实体：全对
    assert score("ner", ["人名：李鹏"], ["说不清"]) == 0.0  # 看不懂的回答不算对，也不报错
    assert score("ner", ["地名：北京、上海"], ["地名：上海；机构名：北京"]) == pytest.approx(2 * 1 / (2 + 2))


def dictionary_scan(text: str, names: dict[str, str]) -> dict[str, list[str]]:
    """逐位置找从这里开始、词典里最长的名字（至少 2 个字）；找到就跳过它，找不到就往后挪一个字。"""
    found, i = {}, 0
    while i < len(text):
        hits = [n for n in names if len(n) >= 2 and text.startswith(n, i)]
        if hits:
            name = max(hits, key=len)
            found.setdefault(names[name], []).append(name)
            i += len(name)
        else:
            i += 1
    return found


def test_baseline_against_counting_and_scanning():
    rng = random.Random(0)
    kinds = list(ENTITY_NAMES.values())
    for trial in range(30):
        # 名字用很少几个字拼，前缀、重叠、互相包含都会出现；每个名字的类型按多数定，次数不会并列
        names = {"".join(rng.choice("北京大学人民") for _ in range(rng.randint(1, 4))): rng.choice(kinds)
                 for _ in range(12)}
        train = []
        for i, (name, kind) in enumerate(names.items()):
            other = next(k for k in kinds if k != kind)
            train += [Example("ner", "找实体", f"{kind}：{name}", f"n{i}a")] * 2 + [
                Example("ner", "找实体", f"{other}：{name}", f"n{i}b")]
        labels = rng.choices(["正面", "负面"], weights=[rng.random(), rng.random()], k=rng.choice([5, 7, 9]))
        train += [Example("sentiment", "判断", label, f"s{j}") for j, label in enumerate(labels)]
        baseline = Baseline(train)
        for _ in range(20):
            text = "".join(rng.choice("北京大学人民好") for _ in range(rng.randint(0, 12)))
            found = dictionary_scan(text, names)
            expected = "；".join(f"{k}：{'、'.join(dict.fromkeys(found[k]))}" for k in kinds if k in found) or NO_ENTITY
            assert baseline.answer(Example("ner", "找实体", "", text)) == expected, (text, names)
        majority = max(["正面", "负面"], key=labels.count)  # 奇数条，不会并列
        assert baseline.answer(Example("sentiment", "判断", "", "随便")) == majority
        assert baseline.answer(Example("segment", "分词", "", "我们爱北京")) == "我 们 爱 北 京"
        assert baseline.answer(Example("continue", "续写", "", "x")) == ""  # 训练集里没有这种指令


# ---------------------------------------------------------------------------
# 命令行：训练、评估、对话（子进程；每个进程 1 个线程，2 核的机器上不互相抢）
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def one_thread():
    """在本进程里跑 aigc 时只用 1 个线程（2 核的机器上几个进程一起跑，多线程反而慢很多）；用完恢复。"""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, one_thread):
    """在本进程里训练（读好的语料留在缓存里，后面的 evaluate 不用再读一遍）。"""
    out = tmp_path_factory.mktemp("sft") / "run"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AIGC_PROFILE", "smoke")
        assert main(["train", "--task", "sft", "--model", "gpt", "--out", str(out), "--quiet", "--lora-rank", "2",
                     "--train-per-type", "4", "--val-per-type", "2", "--batch-size", "4"]) == 0
    return out


def test_train_evaluate_and_one_answer(run_dir, capsys, monkeypatch):
    monkeypatch.setenv("AIGC_PROFILE", "smoke")
    summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    assert summary["sizes"]["lora_rank"] == 2
    new_rows = len(chat_vocab(pretrained("lm-gpt").vocab.itos)) - len(pretrained("lm-gpt").vocab)
    assert summary["trainable_parameters"] == 4 * 2 * (4 * 256 + 2 * 640) + new_rows * 128  # LoRA 的 A、B + 新 token 的词向量
    capsys.readouterr()
    assert main(["evaluate", str(run_dir), "--split", "test", "--limit", "2", "--json"]) == 0
    table = json.loads(capsys.readouterr().out)
    kinds = list(table["metrics"])
    assert kinds == ["sentiment", "segment", "pinyin", "ner", "continue"]
    # 每种指令的分数和基线，在本测试里从模型的回答、基线的回答重新算一遍（每种取测试集的前 2 条）
    task, model, config = load_run(run_dir)
    baseline = Baseline(instruction_examples("train", 100))  # smoke 档位的基线用训练集前 100 条
    for kind in kinds:
        chosen = [e for e in instruction_examples("test", 2) if e.kind == kind]
        answers = [e.answer for e in chosen]
        longest = max(len(chat_tokens(a)) for a in answers) + 2
        ours = [task.reply(model, config, [], e.prompt, longest)[0] for e in chosen]
        assert table[f"{kind}_n"] == len(chosen) == 2
        assert table[f"{kind}_score"] == pytest.approx(score(kind, answers, ours))
        assert table[f"{kind}_baseline"] == pytest.approx(score(kind, answers, [baseline.answer(e) for e in chosen]))
        assert 0.0 <= table[f"{kind}_zero_shot"] <= 1.0
        if kind == "segment":  # 基线让每个字单独成词：与 segmentation_prf 对照
            expected = segmentation_prf([a.split() for a in answers], [list(e.source) for e in chosen])[2]
            assert table["segment_baseline"] == pytest.approx(expected)
    assert table["mean_score"] == pytest.approx(sum(table[f"{k}_score"] for k in kinds) / len(kinds))
    assert main(["chat", str(run_dir), "--prompt", "判断这条评论的情感：物流太慢了"]) == 0
    answer = capsys.readouterr().out
    assert answer.endswith("\n") and not any(t in answer for t in SPECIAL_TOKENS)
    for blank in ("", "   ", "\n\t"):  # 只有空白的提示和空提示一样报错，不让模型对着空白胡写
        assert main(["chat", str(run_dir), "--prompt", blank]) == 2
        assert "--prompt 是空的" in capsys.readouterr().err


def test_chat_empty_line_long_message_and_end_of_input(run_dir):
    long_message = "很好" * 200
    result = run_aigc("chat", str(run_dir), stdin=f"\n   \n{long_message}\n你好\n")
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("空行不会发送") == 2
    assert "只保留前" in result.stderr and "400 个字" in result.stderr
    assert result.stdout.count("助手：") == 2  # 长消息截短后照样回答，空行不回答
    assert "已丢掉最早的" in result.stderr  # 截短的长消息几乎占满上下文，下一句时必须丢掉它
    assert "再见" in result.stderr and "Traceback" not in result.stderr


def test_chat_ctrl_c_exits_cleanly(run_dir):
    process = subprocess.Popen([sys.executable, "-m", "aigc_lib.cli", "chat", str(run_dir)], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, encoding="utf-8", env=cli_env())
    deadline = time.time() + 120
    line = ""
    while "开始对话" not in line and time.time() < deadline:  # 等它读完模型、开始等输入
        line = process.stderr.readline()
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 0
    assert "再见" in err and "Traceback" not in err
