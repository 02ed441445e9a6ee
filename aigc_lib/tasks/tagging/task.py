"""序列标注任务：分词 ``segment``、词性标注 ``pos``、命名实体识别 ``ner``，数据都是《人民日报》1998-01。

三个任务共用一个模型（按字输入的 BiLSTM，加或不加 CRF），只是每个字的标签不同::

    句子   [("江", "nr"), ("泽民", "nr"), ("访问", "v"), ("北京", "ns")]
    字     江     泽     民     访     问     北     京
    segment  S      B      E      B      E      B      E        （单字词 S，多字词 B M…M E）
    pos      B-nr   B-nr   I-nr   B-v    I-v    B-ns   I-ns     （每个词的第一个字 B-词性，其余 I-词性）
    ner      B-PER  I-PER  I-PER  O      O      B-LOC  I-LOC    （nr/ns/nt -> PER/LOC/ORG）

模型家族：``bilstm-crf``（CRF 负对数似然训练、Viterbi 解码）和 ``bilstm-softmax``（同一个 BiLSTM，
逐字交叉熵、逐字 argmax），两者只差 ``BiLSTMTagger(use_crf=...)`` 这一个开关，便于比较 CRF 的作用。

``aigc evaluate`` 的指标：``segment`` 按词的字符区间算 precision / recall / f1（``segmentation_prf``）；
``ner`` 按实体算（``entity_prf``，另有每种实体的 ``f1_PER`` 等）；``pos`` 的 ``accuracy`` 是逐字标签
（B-/I- + 词性）的准确率，precision / recall / f1 是“词的边界和词性都对”的词级分数。三者都报告逐字准确率。

本文件里不依赖 ``Task`` 的几个函数（:func:`sentence_tags`、:func:`split_long`、:func:`pad_tagged`、
:func:`tags_to_words`、:func:`tagged_text`）也给第 03 章直接使用。
"""

from __future__ import annotations

import torch

from dataclasses import dataclass

from ...data.batching import make_loader, pad_batch
from ...data.corpora import bio_entities, bmes_labels, bmes_to_words, load_peoples_daily
from ...metrics import bio_to_spans, entity_prf, segmentation_prf, token_accuracy
from ...models import BiLSTMTagger
from ...data.text import Vocab
from ..base import ModelSpec, Task, TaskError
from ..sizes import Sizes, size

SCHEMES = ("segment", "pos", "ner")
BMES_TAGS = ("B", "M", "E", "S")
NER_TAGS = ("O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG")
ENTITY_NAMES = {"PER": "人名", "LOC": "地名", "ORG": "机构名"}
IGNORE = -100  # 补齐位置的标签：与 CrossEntropyLoss 的 ignore_index 相同，算指标时被去掉


# ---------------------------------------------------------------------------
# 句子 -> (字, 标签)，以及反过来
# ---------------------------------------------------------------------------


def _check_scheme(scheme: str) -> None:
    if scheme not in SCHEMES:
        raise ValueError(f"标注方案只能是 {' | '.join(SCHEMES)}，收到 {scheme!r}。")


def sentence_tags(sentence, scheme: str) -> tuple[list[str], list[str]]:
    """一句 ``[(词, 词性), ...]`` -> ``(字的列表, 每个字的标签)``，两者等长。

    ``scheme``：``"segment"`` 用 BMES；``"pos"`` 每个词的第一个字 ``B-词性``、其余 ``I-词性``；
    ``"ner"`` 用 BIO 实体标签（人名 PER、地名 LOC、机构名 ORG，见 :func:`~aigc_lib.data.corpora.bio_entities`）。

    >>> sentence_tags([("江", "nr"), ("泽民", "nr"), ("访问", "v")], "pos")
    (['江', '泽', '民', '访', '问'], ['B-nr', 'B-nr', 'I-nr', 'B-v', 'I-v'])
    """
    _check_scheme(scheme)
    chars = [ch for word, _ in sentence for ch in word]
    if scheme == "segment":
        tags = bmes_labels([word for word, _ in sentence])
    elif scheme == "pos":
        tags = [("B-" if i == 0 else "I-") + tag for word, tag in sentence for i in range(len(word))]
    else:
        tags = bio_entities(sentence)
    return chars, tags


def _starts_unit(tag: str) -> bool:
    """在这个标签前面切开，会不会把一个词/实体切成两半：B、S、O、B-xx 前面可以切。"""
    return tag in ("B", "S", "O") or tag.startswith("B-")


def split_long(chars, tags, split_len: int) -> list[tuple[list[str], list[str]]]:
    """把过长的句子在词（或实体）的边界切成不超过 ``split_len`` 个字的几段，用于训练。

    为什么要切：一批的循环步数等于其中最长的句子，几句几百字的长句会让整批变慢；在词的边界切开，
    每段的标签仍然完整合法。找不到边界（一个词比 ``split_len`` 还长）时才硬切。

    >>> split_long(list("我们爱北京"), ["B", "E", "S", "B", "E"], 3)
    [(['我', '们', '爱'], ['B', 'E', 'S']), (['北', '京'], ['B', 'E'])]
    """
    if split_len < 1:
        raise ValueError(f"split_len 必须是正整数，收到 {split_len}。")
    pieces, start = [], 0
    while len(chars) - start > split_len:
        cut = next((i for i in range(start + split_len, start, -1) if _starts_unit(tags[i])), start + split_len)
        pieces.append((list(chars[start:cut]), list(tags[start:cut])))
        start = cut
    pieces.append((list(chars[start:]), list(tags[start:])))
    return pieces


def tags_to_words(chars, tags, scheme: str) -> list:
    """模型预测的标签 -> 可读的结果。

    ``segment``：词的列表；``pos``：``[(词, 词性), ...]``；``ner``：``[(实体, 类型, 起点, 终点), ...]``。
    预测的标签不一定合法（例如 O 后面直接 I-PER），这里和评价指标用同样宽松的规则拼回来。

    >>> tags_to_words("江泽民访问北京", ["B-PER", "I-PER", "I-PER", "O", "O", "B-LOC", "I-LOC"], "ner")
    [('江泽民', 'PER', 0, 3), ('北京', 'LOC', 5, 7)]
    """
    _check_scheme(scheme)
    chars = "".join(chars)
    if scheme == "segment":
        return bmes_to_words(chars, tags)
    spans = bio_to_spans(tags)
    if scheme == "ner":
        return [(chars[s:e], kind, s, e) for kind, s, e in spans]
    # 词性：每个字都属于某个词；bio_to_spans 会把 O（不会出现）以外的所有字分进区间
    return [(chars[s:e], kind) for kind, s, e in spans]


def tagged_text(chars, tags, scheme: str) -> str:
    """一行可读的标注结果：分词 ``我们 / 爱 / 北京``，词性 ``我们/r 爱/v 北京/ns``，实体 ``[江泽民]PER访问[北京]LOC``。"""
    units = tags_to_words(chars, tags, scheme)
    if scheme == "segment":
        return " / ".join(units)
    if scheme == "pos":
        return " ".join(f"{word}/{tag}" for word, tag in units)
    text, out, position = "".join(chars), [], 0
    for entity, kind, start, end in units:
        out.append(text[position:start] + f"[{entity}]{kind}")
        position = end
    return "".join(out) + text[position:]


def pad_tagged(batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """DataLoader 的 collate_fn：``[(字编号, 标签编号), ...]`` -> ``(tokens (B, T), lengths (B,), tags (B, T))``。

    字用 0（``<pad>``）补齐，标签用 -100 补齐：-100 不是任何标签，算损失和指标时被忽略。
    """
    tokens, lengths = pad_batch([ids for ids, _ in batch])  # (B, T), (B,)
    tags, _ = pad_batch([t for _, t in batch], pad_id=IGNORE)  # (B, T)
    return tokens, lengths, tags


def tagging_step(model: BiLSTMTagger, batch):
    """训练引擎的一步。训练时只返回损失；验证时再解码，返回 ``(损失, 预测 (B, T), 标签 (B, T))``，
    这样 ``fit(metrics={"accuracy": ...})`` 能在整个验证集上算逐字准确率（补齐位置是 -100，被去掉）。"""
    tokens, lengths, tags = batch
    emissions = model(tokens, lengths)  # (B, T, K)
    loss = model.emission_loss(emissions, lengths, tags)
    if model.training:
        return loss
    predicted = torch.full_like(tags, IGNORE)  # (B, T)：补齐位置留 -100
    for i, path in enumerate(model.decode_emissions(emissions, lengths)):
        predicted[i, : len(path)] = torch.tensor(path, device=tags.device)
    return loss, predicted, tags


# ---------------------------------------------------------------------------
# 标签表与批量解码
# ---------------------------------------------------------------------------


def tag_inventory(scheme: str, tag_lists) -> list[str]:
    """标签表（编号 -> 标签）。分词固定为 B M E S，实体固定为 O 与三类实体的 B-/I-；
    词性从训练数据里数出来：常见的词性排在前面，每个词性两个标签 ``B-词性``、``I-词性``。

    >>> tag_inventory("pos", [["B-n", "I-n", "B-v"], ["B-n"]])
    ['B-n', 'I-n', 'B-v', 'I-v']
    """
    _check_scheme(scheme)
    if scheme == "segment":
        return list(BMES_TAGS)
    if scheme == "ner":
        return list(NER_TAGS)
    counts: dict[str, int] = {}
    for tags in tag_lists:
        for tag in tags:
            counts[tag[2:]] = counts.get(tag[2:], 0) + 1
    ordered = sorted(counts, key=lambda t: (-counts[t], t))
    return [prefix + pos for pos in ordered for prefix in ("B-", "I-")]


def decode_in_batches(model: BiLSTMTagger, id_lists, device=None, batch_size: int = 256) -> list[list[int]]:
    """对很多句子（每句一串字编号）解码，返回每句的标签编号，顺序与输入相同。

    先按长度排序再分批：同一批里的句子长短相近，补齐的位置少，解码快得多。
    不切换 train/eval 模式，调用前请先 ``model.eval()``。
    """
    device = next(model.parameters()).device if device is None else torch.device(device)
    order = sorted(range(len(id_lists)), key=lambda i: len(id_lists[i]))
    result: list[list[int]] = [[] for _ in id_lists]
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            chunk = order[start:start + batch_size]
            tokens, lengths = pad_batch([id_lists[i] for i in chunk])  # (B, T), (B,)
            for i, path in zip(chunk, model.decode(tokens.to(device), lengths.to(device))):
                result[i] = path
    return result


# ---------------------------------------------------------------------------
# 任务
# ---------------------------------------------------------------------------


def _to_corpus_width(text: str) -> str:
    """半角 ASCII -> 全角：语料里的数字和字母都是全角的（``１９９８``），这样 ``2024年`` 才不会变成 <unk>。"""
    return "".join(chr(ord(ch) + 0xFEE0) if "!" <= ch <= "~" else ch for ch in text)


@dataclass
class TaggingSizes(Sizes):
    """分词、词性、实体三个任务、两个模型共用的尺寸。"""

    train_limit: int = size("只用前 N 句训练（0 表示全部）", smoke=600, cpu=0, gpu=0, at_least=0)
    split_len: int = size("训练时长句在词边界切成不超过这么多字的段", smoke=60, cpu=100, gpu=150, at_least=1)
    min_freq: int = size("进入词表的最低词频", 1, at_least=1)
    vocab_size: int = size("词表大小上限（含 <pad>、<unk>）", smoke=3000, cpu=6000, gpu=6000, at_least=3)
    epochs: int = size("训练轮数", smoke=1, cpu=2, gpu=10, at_least=1)
    batch_size: int = size("每批样本数", smoke=32, cpu=64, gpu=128, at_least=1)
    lr: float = size("峰值学习率（AdamW，先预热再余弦衰减）", smoke=3e-3, cpu=5e-3, gpu=2e-3, above=0)
    embed_dim: int = size("字向量维数", smoke=32, cpu=128, gpu=128, at_least=1)
    hidden_dim: int = size("BiLSTM 两个方向合起来的隐藏层宽度（每个方向一半，须是偶数）", smoke=64, cpu=128, gpu=512, at_least=1)
    num_layers: int = size("层数", smoke=1, cpu=1, gpu=2, at_least=1)
    dropout: float = size("dropout 比例", smoke=0.0, cpu=0.1, gpu=0.2, at_least=0, below=1)


def build_tagger(use_crf: bool):
    """``bilstm-crf`` / ``bilstm-softmax`` 的搭建函数（只差 ``use_crf``）。"""
    def build(sizes: dict, artifacts: dict) -> BiLSTMTagger:
        return BiLSTMTagger(len(artifacts["vocab"]), len(artifacts["tags"]), embed_dim=sizes["embed_dim"],
                            hidden_dim=sizes["hidden_dim"], num_layers=sizes["num_layers"], dropout=sizes["dropout"],
                            use_crf=use_crf)
    return build


class TaggingTask(Task):
    """按字的序列标注。``TaggingTask("segment")``、``TaggingTask("pos")``、``TaggingTask("ner")``。"""

    models = {"bilstm-crf": ModelSpec(build_tagger(True), BiLSTMTagger, TaggingSizes),
              "bilstm-softmax": ModelSpec(build_tagger(False), BiLSTMTagger, TaggingSizes)}
    monitor = "val_loss"
    _DESCRIPTIONS = {
        "segment": "中文分词（按字 BMES 标注）",
        "pos": "词性标注（按字 B-/I- + 词性，同时分词）",
        "ner": "命名实体识别（人名、地名、机构名，BIO）",
    }

    def __init__(self, scheme: str):
        _check_scheme(scheme)
        self.name = scheme
        self.metric = "accuracy" if scheme == "pos" else "f1"  # 词性按字算准确率；分词、实体按词 / 实体算 F1
        self.description = self._DESCRIPTIONS[scheme]

    # ---------------------------------------------------------------- 数据
    def _examples(self, split: str, limit: int = 0) -> list[tuple[list[str], list[str]]]:
        sentences = load_peoples_daily(split)
        if limit:
            sentences = sentences[:limit]
        return [sentence_tags(s, self.name) for s in sentences]

    @staticmethod
    def _encode(examples, vocab: Vocab, tag_index: dict, split_len: int | None):
        """编码成 ``[(字编号, 标签编号), ...]``。含训练集里没有的标签（少见的词性）的段落跳过：
        CRF 无法给一个不存在的标签打分。"""
        pairs = []
        for chars, tags in examples:
            pieces = split_long(chars, tags, split_len) if split_len else [(chars, tags)]
            for c, t in pieces:
                if all(tag in tag_index for tag in t):
                    pairs.append((vocab.encode(c), [tag_index[tag] for tag in t]))
        return pairs

    def prepare(self, sizes: dict):
        train = self._examples("train", sizes["train_limit"])
        vocab = Vocab([chars for chars, _ in train], min_freq=sizes["min_freq"], max_size=sizes["vocab_size"])
        tag_list = tag_inventory(self.name, [tags for _, tags in train])
        tag_index = {tag: i for i, tag in enumerate(tag_list)}
        train_pairs = self._encode(train, vocab, tag_index, sizes["split_len"])
        # 只用一小部分训练数据时（smoke、测试），验证集也相应取小，免得验证比训练还慢
        val_limit = max(100, sizes["train_limit"] // 8) if sizes["train_limit"] else 0
        val_pairs = self._encode(self._examples("val", val_limit), vocab, tag_index, sizes["split_len"])
        train_loader = make_loader(train_pairs, batch_size=sizes["batch_size"], shuffle=True, collate_fn=pad_tagged)
        # 验证集也按长度分桶（顺序无关紧要，指标在整个验证集上算），补齐少、快
        val_loader = make_loader(val_pairs, batch_size=256, shuffle=False, bucket=True, collate_fn=pad_tagged)
        return train_loader, val_loader, {"vocab": list(vocab.itos), "tags": tag_list, "scheme": self.name}

    def fit_options(self, sizes: dict) -> dict:
        return {"step": tagging_step, "metrics": {"accuracy": _flat_accuracy}}

    # ---------------------------------------------------------------- 评估与预测
    def predict_tags(self, model, config: dict, char_lists, device) -> list[list[str]]:
        """每句（字的列表）的预测标签（字符串）。"""
        vocab = Vocab.from_itos(config["artifacts"]["vocab"])
        tag_list = config["artifacts"]["tags"]
        ids = [vocab.encode(list(_to_corpus_width("".join(chars)))) for chars in char_lists]
        return [[tag_list[i] for i in path] for path in decode_in_batches(model, ids, device)]

    def evaluate(self, model, config, split, device, limit=None) -> dict:
        examples = [(c, t) for c, t in self._examples(split) if c][:limit]
        gold = [tags for _, tags in examples]
        pred = self.predict_tags(model, config, [chars for chars, _ in examples], device)
        result = {"task": self.name, "model": config["model"], "split": split, "n": len(examples),
                  "chars": sum(len(t) for t in gold)}
        result.update(score_tags(gold, pred, [chars for chars, _ in examples], self.name))
        return result

    def predict(self, model, config, inputs, device) -> list[dict]:
        texts = ["".join(ch for ch in text if not ch.isspace()) for text in inputs]
        if not all(texts):
            raise TaskError("有一句话是空的（或只有空白）：请去掉空行后再预测。")
        rows = []
        for text, tags in zip(texts, self.predict_tags(model, config, [list(t) for t in texts], device)):
            row = {"text": text, "tags": tags, "tagged": tagged_text(text, tags, self.name)}
            units = tags_to_words(text, tags, self.name)
            if self.name == "segment":
                row["words"] = units
            elif self.name == "pos":
                row["words"] = [list(u) for u in units]
            else:
                row["entities"] = [{"text": e, "type": k, "start": s, "end": t} for e, k, s, t in units]
            rows.append(row)
        return rows

    def format_prediction(self, row: dict) -> str:
        return row["tagged"]


def _flat_accuracy(y_true: torch.Tensor, y_pred: torch.Tensor) -> float:
    """fit 的验证指标：所有真实位置上标签相同的比例（补齐位置已被 fit 去掉）。"""
    return float((y_true == y_pred).float().mean()) if len(y_true) else 0.0


def score_tags(gold, pred, chars, scheme: str) -> dict:
    """一组句子的标准标签与预测标签 -> 指标字典（``aigc evaluate`` 与第 03 章共用）。

    总有 ``accuracy``（逐字）、``precision``、``recall``、``f1``；``ner`` 另有每种实体的
    ``precision_PER``、``recall_PER``、``f1_PER``、``support_PER`` 等。
    """
    _check_scheme(scheme)
    result = {"accuracy": token_accuracy(gold, pred)}
    if scheme == "segment":
        p, r, f = segmentation_prf([bmes_to_words(c, t) for c, t in zip(chars, gold)],
                                   [bmes_to_words(c, t) for c, t in zip(chars, pred)])
        result.update(precision=p, recall=r, f1=f)
    elif scheme == "pos":
        p, r, f = entity_prf(gold, pred)  # 一个“实体”= 一个词连同它的词性
        result.update(precision=p, recall=r, f1=f)
    else:
        report = entity_prf(gold, pred, per_type=True)
        overall = report.pop("overall")
        result.update(precision=overall["precision"], recall=overall["recall"], f1=overall["f1"])
        for kind in ("PER", "LOC", "ORG"):
            scores = report.get(kind, {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0})
            for key in ("precision", "recall", "f1", "support"):
                result[f"{key}_{kind}"] = scores[key]
    return result
