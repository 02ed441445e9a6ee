"""拼音 -> 汉字：把不带声调的音节序列"翻译"成汉字（第 10 章）。

数据是同一文件夹 ``data.py`` 里的 :func:`~aigc_lib.tasks.pinyin.data.pinyin_pairs` 从《人民日报》小句生成的平行语料；模型是
:class:`~aigc_lib.models.seq2seq.Seq2SeqTransformer`，批次 ``(src, src_lengths, tgt_in, tgt_out)``
交给 ``fit``。评估和预测默认用贪心解码（``decoding.py``），输出长度固定为输入的音节数（一个音节一个字）；
config 里记着浅融合的设置时改用束搜索 + 语言模型（``fusion.py``），还记着词二元语法的权重时再重打分
（``rescoring.py``，模型库的参考模型 ``pretrained:pinyin`` 就是这样）。

    aigc train --task pinyin --model seq2seq --out runs/pinyin
    aigc evaluate runs/pinyin --split test --json        # {"char_accuracy": ..., "bleu": ..., ...}
    aigc predict runs/pinyin "wo men ai bei jing"         # 我们爱北京
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from ...data.batching import make_loader
from ...metrics import accuracy, bleu
from ...models.seq2seq import Seq2SeqTransformer
from ...data.text import Vocab
from ..base import ModelSpec, Task, TaskError, load_pretrained
from ..sizes import Sizes, size
from .data import char_accuracy, parse_pinyin, pinyin_pairs, seq2seq_collate
from .decoding import convert
from .fusion import fused_convert
from .rescoring import RESCORING_KEYS, rescored_convert, train_word_bigram, word_bigram_fingerprint

SPECIALS = ("<bos>", "<eos>")  # 两个词表都是 <pad>=0、<unk>=1、<bos>=2、<eos>=3


def encode_pairs(pairs, src_vocab: Vocab, tgt_vocab: Vocab) -> list[tuple[list[int], list[int]]]:
    """``[(音节列表, 汉字串), ...]`` -> ``[(音节编号, 字编号), ...]``（词表外的是 <unk>=1）。"""
    return [(src_vocab.encode(syllables), tgt_vocab.encode(list(text))) for syllables, text in pairs]


def build_vocabs(pairs, min_freq: int = 1, max_size: int | None = None) -> tuple[Vocab, Vocab]:
    """由训练对建 (音节表, 字表)；字表按 min_freq、max_size 截断，更少见的字记为 <unk>。"""
    src_vocab = Vocab([syllables for syllables, _ in pairs], specials=SPECIALS)
    tgt_vocab = Vocab([list(text) for _, text in pairs], min_freq=min_freq, max_size=max_size, specials=SPECIALS)
    return src_vocab, tgt_vocab


@dataclass
class PinyinSizes(Sizes):
    max_chars: int = size("只用不超过这么多字的小句", smoke=12, cpu=20, gpu=20, at_least=2)
    train_limit: int = size("只用前 N 个训练小句（0 表示全部）", smoke=2000, cpu=0, gpu=0, at_least=0)
    val_limit: int = size("训练时每轮验证用几个小句（0 表示全部）", smoke=300, cpu=0, gpu=0, at_least=0)
    min_freq: int = size("进入字表的最低频次（更少见的字记为 <unk>）", smoke=1, cpu=2, gpu=1, at_least=1)
    epochs: int = size("训练轮数", smoke=1, cpu=3, gpu=20, at_least=1)
    batch_size: int = size("每批样本数", smoke=32, cpu=64, gpu=256, at_least=1)
    lr: float = size("峰值学习率（AdamW，先预热再余弦衰减）", smoke=2e-3, cpu=3e-3, gpu=1e-3, above=0)
    d_model: int = size("模型宽度（Transformer）", smoke=32, cpu=128, gpu=256, at_least=1)
    num_heads: int = size("注意力头数（Transformer）", smoke=2, cpu=4, gpu=8, at_least=1)
    # 编码器层数：消歧主要靠看清前后的音节
    num_layers: int = size("编码器层数", smoke=1, cpu=3, gpu=4, at_least=1)
    num_decoder_layers: int = size("解码器层数", smoke=1, cpu=1, gpu=2, at_least=1)
    dropout: float = size("dropout 比例", smoke=0.0, cpu=0.0, gpu=0.1, at_least=0, below=1)
    aligned: bool = size("输出与输入逐位对齐（见 Seq2SeqTransformer 的 aligned；--no-aligned 关闭）", True)


def build_seq2seq(sizes: dict, artifacts: dict) -> Seq2SeqTransformer:
    return Seq2SeqTransformer(
        len(artifacts["src_vocab"]), len(artifacts["tgt_vocab"]), d_model=sizes["d_model"],
        num_heads=sizes["num_heads"], num_encoder_layers=sizes["num_layers"],
        num_decoder_layers=sizes["num_decoder_layers"], dim_feedforward=2 * sizes["d_model"],
        dropout=sizes["dropout"], context_len=max(64, sizes["max_chars"] + 2), aligned=sizes["aligned"],
    )


class PinyinTask(Task):
    name = "pinyin"
    metric = "char_accuracy"
    description = "拼音 -> 汉字（Transformer 编码器-解码器）"
    models = {"seq2seq": ModelSpec(build_seq2seq, Seq2SeqTransformer, PinyinSizes)}
    monitor = "val_loss"

    # ---------------------------------------------------------------- 数据
    def _pairs(self, split: str, sizes: dict, limit: int = 0):
        return pinyin_pairs(split, max_chars=sizes["max_chars"], limit=limit or None)

    def prepare(self, sizes: dict):
        train_pairs = self._pairs("train", sizes, sizes["train_limit"])
        src_vocab, tgt_vocab = build_vocabs(train_pairs, min_freq=sizes["min_freq"])
        collate = functools.partial(seq2seq_collate, bos_id=tgt_vocab["<bos>"], eos_id=tgt_vocab["<eos>"])
        train = encode_pairs(train_pairs, src_vocab, tgt_vocab)
        val = encode_pairs(self._pairs("val", sizes, sizes["val_limit"]), src_vocab, tgt_vocab)
        train_loader = make_loader(train, batch_size=sizes["batch_size"], shuffle=True, collate_fn=collate)
        val_loader = make_loader(val, batch_size=256, collate_fn=collate)
        return train_loader, val_loader, {"src_vocab": list(src_vocab.itos), "tgt_vocab": list(tgt_vocab.itos),
                                          "max_chars": sizes["max_chars"]}

    def fit_options(self, sizes: dict) -> dict:
        # 验证时的"字准确率"是老师强制下的（每个位置都给了正确的前文），比真正逐字解码略高
        return {"metrics": {"accuracy": accuracy}}

    # ---------------------------------------------------------------- 评估与预测
    @staticmethod
    def _vocabs(config: dict) -> tuple[Vocab, Vocab]:
        artifacts = config["artifacts"]
        return Vocab.from_itos(artifacts["src_vocab"]), Vocab.from_itos(artifacts["tgt_vocab"])

    @staticmethod
    def decoding(config: dict) -> dict:
        """怎样解码，写进评估结果：``{"decoding": "greedy"}``，或浅融合的 ``{"decoding": "fusion", "lm": ...,
        "lm_weight": λ, "beam_size": ...}``（config 里有 ``decoding`` 时，见 ``fusion.py``），重打分时
        ``"decoding": "rescoring"`` 再加上 ``"word_weight": μ, "word_kbest": ...``（模型库的参考模型，见 ``rescoring.py``）。"""
        spec = config.get("decoding")
        if not spec:
            return {"decoding": "greedy"}
        found = {"decoding": "fusion", "lm": spec["lm"], "lm_weight": spec["lm_weight"], "beam_size": spec["beam_size"]}
        if "word_weight" in spec:  # 再用词二元语法重打分（rescoring.py）
            found.update(decoding="rescoring", word_weight=spec["word_weight"], word_kbest=spec["word_kbest"])
        return found

    DECODINGS = ("greedy", "fusion", "rescoring")

    def with_decoding(self, config: dict, decoding: str) -> dict:
        """换一种解码方式：``greedy`` 去掉 config 里记下的设置；``fusion`` 只留浅融合（去掉重打分的 μ）；
        ``rescoring`` 就是记下的全部设置。例如 ``aigc evaluate pretrained:pinyin --decoding greedy`` 复现
        第 10 章"参考模型 贪心"那一行。config 里没记下的解码方式（自己训练的模型只有贪心）给出中文错误。"""
        if decoding not in self.DECODINGS:
            raise TaskError(f"--decoding 只能是 {' | '.join(self.DECODINGS)}，收到 {decoding!r}。")
        recorded = self.decoding(config)["decoding"]
        if self.DECODINGS.index(decoding) > self.DECODINGS.index(recorded):
            raise TaskError(f"这个模型的 config 里只记着 {recorded} 解码需要的设置，没法用 {decoding}："
                            "浅融合的 λ、重打分的 μ 都要在验证集上挑好（见 benchmarks/train_reference.py 的 tune_pinyin）。")
        if decoding == "greedy":
            return {**config, "decoding": None}
        if decoding == "fusion":
            return {**config, "decoding": {k: v for k, v in config["decoding"].items() if k not in RESCORING_KEYS}}
        return config

    def _convert(self, model, config: dict, syllable_lists, device) -> list[str]:
        """按 config 解码：默认贪心（:func:`convert`）；config 里记着浅融合的设置时用 :func:`fused_convert`，
        还记着词二元语法的权重 μ 时用 :func:`rescored_convert`。"""
        src_vocab, tgt_vocab = self._vocabs(config)
        spec = config.get("decoding")
        if not spec:
            return convert(model, syllable_lists, src_vocab, tgt_vocab, device)
        lm = load_pretrained(spec["lm"], device=device)
        if lm.provenance["weights"]["sha256"] != spec["lm_sha256"]:
            raise TaskError(f"这个拼音模型的浅融合 λ={spec['lm_weight']} 是和另一个版本的 {spec['lm']} 一起在验证集上挑的"
                            f"（sha256 {spec['lm_sha256'][:12]}…），现在模型库里的 {spec['lm']} 是 "
                            f"{lm.provenance['weights']['sha256'][:12]}…。请重新导出拼音模型："
                            "python benchmarks/train_reference.py --export-only --only pinyin")
        if "word_weight" not in spec:
            return fused_convert(model, syllable_lists, src_vocab, tgt_vocab, lm.model, lm.vocab,
                                 weight=spec["lm_weight"], beam_size=spec["beam_size"], lexicon=spec["lexicon"])
        word_bigram = train_word_bigram()
        if word_bigram_fingerprint(word_bigram) != spec["word_bigram"]:
            raise TaskError(f"这个拼音模型的 μ={spec['word_weight']} 是和另一份训练语料数出的词二元语法一起挑的"
                            f"（{spec['word_bigram']}），现在数出来的是 {word_bigram_fingerprint(word_bigram)}。"
                            "请重新导出拼音模型：python benchmarks/train_reference.py --export-only --only pinyin")
        return rescored_convert(model, syllable_lists, src_vocab, tgt_vocab, lm.model, lm.vocab, word_bigram,
                                weight=spec["lm_weight"], word_weight=spec["word_weight"],
                                beam_size=spec["beam_size"], lexicon=spec["lexicon"], kbest=spec["word_kbest"])

    def evaluate(self, model, config, split, device, limit=None) -> dict:
        pairs = self._pairs(split, config["sizes"], limit or 0)
        references = [text for _, text in pairs]
        hypotheses = self._convert(model, config, [s for s, _ in pairs], device)
        return {"task": self.name, "model": config["model"], "split": split, "n": len(pairs),
                **self.decoding(config), "char_accuracy": char_accuracy(references, hypotheses),
                "bleu": bleu(references, hypotheses, tokenize="char"),
                "sentence_accuracy": sum(r == h for r, h in zip(references, hypotheses)) / max(len(pairs), 1)}

    def format_prediction(self, row: dict) -> str:
        return f"{row['hanzi']}\t{row['pinyin']}"

    def predict(self, model, config, inputs, device) -> list[dict]:
        src_vocab = self._vocabs(config)[0]
        max_syllables = model.context_len - 1  # 还要留一个位置给 <eos>
        syllable_lists = []
        for i, text in enumerate(inputs):
            where = f"第 {i + 1} 句 {text!r}：" if len(inputs) > 1 else ""  # 一次预测一个文件时，指出是哪一句
            try:
                syllables = parse_pinyin(text)
            except ValueError as error:
                raise TaskError(where + str(error)) from None
            if not syllables:
                raise TaskError(where + "输入是空的：请写不带声调、用空格隔开的拼音，例如 \"wo men ai bei jing\"。")
            if len(syllables) > max_syllables:
                raise TaskError(where + f"一次最多 {max_syllables} 个音节，收到 {len(syllables)} 个："
                                "请在标点处断开，分成几句输入。")
            syllable_lists.append(syllables)
        outputs = self._convert(model, config, syllable_lists, device)
        return [{"pinyin": " ".join(s), "hanzi": out, "unknown_syllables": [x for x in s if x not in src_vocab]}
                for s, out in zip(syllable_lists, outputs)]
