"""Transformer 编码器-解码器（seq2seq）：把一个序列"翻译"成另一个序列。

从上往下读：
  1. ``TransformerDecoderLayer``：解码器的一层 = 带因果掩码的自注意力 + 交叉注意力 + 前馈层；
  2. ``Seq2SeqTransformer``：编码器读完整个源序列（双向），解码器一个一个地写目标序列，
     每写一个词都通过交叉注意力回头"看"源序列；
  3. 解码：``Seq2SeqDecoder`` 把编码器-解码器包成 :mod:`aigc_lib.generation` 的逐步协议（源序列只编码
     一次，每步只喂新写的词，带 KV 缓存）；``greedy_decode``（每步取最可能的词）和 ``beam_search``
     （交给唯一的 :func:`~aigc_lib.generation.beam_search_batch`）都用它。

训练时用"老师强制"（teacher forcing）：把正确答案右移一位喂给解码器，一次算出所有位置的预测::

    tgt_in   <bos> 我  爱  你
    tgt_out   我   爱  你 <eos>

    logits = model(src (B, S), src_lengths (B,), tgt_in (B, T))     # (B, T, V)
    loss = F.cross_entropy(logits.flatten(0, 1), tgt_out.flatten())  # 补齐位置的 tgt_out 是 -100

所以批次 ``(src, src_lengths, tgt_in, tgt_out)`` 直接交给 ``fit``（目标在最后，见
:func:`aigc_lib.tasks.pinyin.data.seq2seq_collate`）。两种掩码：
  * 源序列的补齐掩码：编码器自注意力和解码器交叉注意力都不许看源序列里补齐的位置；
  * 目标序列的因果掩码：第 t 个位置只能看 ``tgt_in`` 的前 t+1 个词，否则训练时就"偷看"了答案。
目标序列在右边补齐，因果掩码已经挡住了它们，不需要另加补齐掩码。

解码时用第 09 章的 KV 缓存（:class:`Seq2SeqCache`）：自注意力把每层已写出位置的 k、v 存起来，
每步只算最新的一个位置；交叉注意力的 k、v 只取决于源序列，每层只算一次。``use_cache=False``
时每步把整个已写出的前缀重算一遍（结果相同，用来对照和测速）。
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..generation import beam_search_batch
from ..core.runtime import eval_mode
from .layers import check_lengths, check_token_ids, length_mask
from .transformer import KVCache, MultiHeadAttention, SinusoidalPositions, TransformerEncoderLayer


class TransformerDecoderLayer(nn.Module):
    """解码器的一层（pre-norm），比编码器层多了中间的交叉注意力::

        y = y + Dropout(SelfAttention(LN(y), causal=True))       # 只看已经写出的词
        y = y + Dropout(CrossAttention(LN(y), memory, memory))    # 查询来自解码器，键和值来自编码器
        y = y + Dropout(FFN(LN(y)))

    计算与 ``nn.TransformerDecoderLayer(norm_first=True, activation="gelu", batch_first=True)`` 相同
    （测试里复制权重逐元素对照）。

    ``forward(y (B, T, C), memory (B, S, C), memory_padding_mask (B, S) 或 None, need_weights=False,
    cache=None, layer=0) -> (y (B, T, C), self_weights (B, H, T, T) 或 None, cross_weights (B, H, T, S) 或 None)``；
    memory_padding_mask 为 True 的位置是源序列的补齐。给了 ``cache``（:class:`Seq2SeqCache`）时，y 只是新的
    几个位置：自注意力把它们的 k、v 写进缓存的第 ``layer`` 层再看全部已写出的位置，交叉注意力用缓存里
    这一层现成的源序列 k、v（此时权重形状里的 T 是已写出的位置数）。
    """

    def __init__(self, d_model: int, num_heads: int, dim_feedforward: int = 512, dropout: float = 0.1) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(d_model)
        self.self_attn = MultiHeadAttention(d_model, num_heads, dropout=dropout)
        self.norm2 = nn.LayerNorm(d_model)
        self.cross_attn = MultiHeadAttention(d_model, num_heads, dropout=dropout)
        self.norm3 = nn.LayerNorm(d_model)
        self.ff = nn.Sequential(
            nn.Linear(d_model, dim_feedforward),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(dim_feedforward, d_model),
        )
        self.dropout = nn.Dropout(dropout)

    def memory_keys_values(self, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """交叉注意力的键和值 (B, H, S, hs)：只取决于源序列，解码时每层算一次就够了。"""
        attn = self.cross_attn
        return attn.split_heads(attn.k_proj(memory)), attn.split_heads(attn.v_proj(memory))

    def forward(self, y, memory, memory_padding_mask=None, need_weights: bool = False, cache=None, layer: int = 0):
        # 自注意力：q、k、v 自己算，好在注意力之前拼上缓存里已写出位置的 k、v（同 GPTBlock）
        attn, h = self.self_attn, self.norm1(y)
        q, k, v = (attn.split_heads(proj(h)) for proj in (attn.q_proj, attn.k_proj, attn.v_proj))  # (B, H, T, hs)
        if cache is not None:
            k, v = cache.self_attention.update(layer, k, v)  # (B, H, 已写出 + T, hs)
        # 带缓存只喂 1 个新词时，它本来就能看见全部已写出的位置，不需要因果掩码
        causal = cache is None or q.size(2) > 1
        attended, self_weights = attn.attend(q, k, v, causal=causal, need_weights=need_weights)
        y = y + self.dropout(attn.out_proj(attn.merge_heads(attended)))  # (B, T, C)
        # 交叉注意力：查询来自解码器，键和值来自编码器（带缓存时直接取现成的）
        attn = self.cross_attn
        q = attn.split_heads(attn.q_proj(self.norm2(y)))  # (B, H, T, hs)
        k, v = cache.cross[layer] if cache is not None else self.memory_keys_values(memory)  # (B, H, S, hs)
        mask = None if memory_padding_mask is None else ~memory_padding_mask.bool()[:, None, None, :]  # (B, 1, 1, S)
        attended, cross_weights = attn.attend(q, k, v, mask=mask, need_weights=need_weights)
        y = y + self.dropout(attn.out_proj(attn.merge_heads(attended)))  # (B, T, C)
        y = y + self.dropout(self.ff(self.norm3(y)))  # (B, T, C)
        return y, self_weights, cross_weights


class Seq2SeqCache:
    """编码器-解码器解码时的缓存，由 :meth:`Seq2SeqTransformer.new_cache` 创建。

    * ``self_attention``：解码器自注意力每层已写出位置的 k、v（一个 :class:`KVCache`，随解码增长）；
    * ``cross``：每层交叉注意力的 (k, v)，形状 (B, H, S, hs)，由源序列算出，解码过程中不变。

    ``length`` 是已写出的位置数；``reorder(index)`` 按束搜索的父候选重排两者的批次维。
    """

    def __init__(self, self_attention: KVCache, cross: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        self.self_attention, self.cross = self_attention, cross

    @property
    def length(self) -> int:
        return self.self_attention.length

    def reorder(self, index: torch.Tensor) -> None:
        self.self_attention.reorder(index)
        self.cross = [(k.index_select(0, index), v.index_select(0, index)) for k, v in self.cross]


class Seq2SeqTransformer(nn.Module):
    """Transformer 编码器-解码器。

    参数：
        src_vocab_size, tgt_vocab_size: 源、目标词表大小（拼音 -> 汉字时分别是音节表和字表）。
        d_model, num_heads, dim_feedforward, dropout: 每层的宽度、头数、前馈层宽度、dropout。
        num_encoder_layers, num_decoder_layers: 编码器、解码器的层数。
        context_len: 源和目标序列的最大长度（位置编码表的大小）；解码最多写 context_len 个词（含 <eos>）。
        pad_id, bos_id, eos_id: 补齐、句首、句末的编号（两边词表共用同样的约定：0、2、3）。
        tie_embeddings: 解码器的输入词向量与输出层共享权重（少一大块参数，小数据上通常更好）。
        aligned: 只用于**输出与输入逐位对齐、等长**的任务（拼音 -> 汉字、音译、逐字纠错）：
            解码器第 t 个位置的输入再加上编码器第 t 个位置的输出，不必先靠交叉注意力学会"对齐"。
            它仍然是完整的 seq2seq（交叉注意力、逐词解码都在），只是多了一条捷径；默认关闭。

    ``model(src, src_lengths, tgt_in) -> logits (B, T, tgt_vocab_size)``（训练）；解码见 :meth:`greedy_decode`、
    :meth:`beam_search` 和 :class:`Seq2SeqDecoder`；
    注意力权重（画热力图用）由 :meth:`attention_weights` 单独给出，``forward`` 总是只返回 logits。
    空的源序列（长度 0）与其他模型家族一样报错（见 :func:`~aigc_lib.models.layers.check_lengths`）。

    >>> model = Seq2SeqTransformer(10, 12, d_model=16, num_heads=2).eval()
    >>> src, lengths, tgt_in = torch.tensor([[4, 5, 6]]), torch.tensor([3]), torch.tensor([[2, 7, 8]])
    >>> model(src, lengths, tgt_in).shape
    torch.Size([1, 3, 12])
    >>> len(model.greedy_decode(src, lengths, target_lengths=lengths)[0])   # 等长解码：正好 3 个词
    3
    """

    def __init__(
        self,
        src_vocab_size: int,
        tgt_vocab_size: int,
        d_model: int = 128,
        num_heads: int = 4,
        num_encoder_layers: int = 2,
        num_decoder_layers: int = 2,
        dim_feedforward: int = 512,
        dropout: float = 0.1,
        context_len: int = 256,
        pad_id: int = 0,
        bos_id: int = 2,
        eos_id: int = 3,
        tie_embeddings: bool = True,
        aligned: bool = False,
    ) -> None:
        super().__init__()
        if len({pad_id, bos_id, eos_id}) != 3:
            raise ValueError(f"pad_id、bos_id、eos_id 必须互不相同，收到 {pad_id}、{bos_id}、{eos_id}。")
        if max(pad_id, bos_id, eos_id) >= tgt_vocab_size:
            raise ValueError(
                f"tgt_vocab_size={tgt_vocab_size} 太小，放不下 pad/bos/eos 的编号 {pad_id}/{bos_id}/{eos_id}。"
                "请把 <bos>、<eos> 加进目标词表，例如 Vocab(..., specials=('<bos>', '<eos>'))。"
            )
        self.config = dict(
            src_vocab_size=src_vocab_size, tgt_vocab_size=tgt_vocab_size, d_model=d_model, num_heads=num_heads,
            num_encoder_layers=num_encoder_layers, num_decoder_layers=num_decoder_layers,
            dim_feedforward=dim_feedforward, dropout=dropout, context_len=context_len, pad_id=pad_id, bos_id=bos_id,
            eos_id=eos_id, tie_embeddings=tie_embeddings, aligned=aligned,
        )
        self.d_model, self.context_len, self.aligned = d_model, context_len, aligned
        self.num_heads = num_heads
        self.pad_id, self.bos_id, self.eos_id = pad_id, bos_id, eos_id
        self.src_embedding = nn.Embedding(src_vocab_size, d_model, padding_idx=pad_id)
        self.tgt_embedding = nn.Embedding(tgt_vocab_size, d_model, padding_idx=pad_id)
        self.positions = SinusoidalPositions(d_model, context_len)
        self.dropout = nn.Dropout(dropout)
        self.encoder_layers = nn.ModuleList(
            TransformerEncoderLayer(d_model, num_heads, dim_feedforward, dropout) for _ in range(num_encoder_layers)
        )
        self.encoder_norm = nn.LayerNorm(d_model)
        self.decoder_layers = nn.ModuleList(
            TransformerDecoderLayer(d_model, num_heads, dim_feedforward, dropout) for _ in range(num_decoder_layers)
        )
        self.decoder_norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, tgt_vocab_size, bias=False)
        # 词向量初始化为 N(0, 1/d)，输入时乘 sqrt(d)：输入的每一维方差约为 1，
        # 共享给输出层时初始 logits 也不会太大（否则一开始的损失远高于 log V）
        for embedding in (self.src_embedding, self.tgt_embedding):
            nn.init.normal_(embedding.weight, std=d_model**-0.5)
            with torch.no_grad():
                embedding.weight[pad_id].zero_()
        if tie_embeddings:
            self.head.weight = self.tgt_embedding.weight

    # ---------------------------------------------------------------- 编码与解码

    def _check_length(self, T: int, what: str) -> None:
        if T > self.context_len:
            raise ValueError(f"{what}长 {T}，超过了模型的 context_len={self.context_len}。"
                             "请截断输入，或用更大的 context_len 构造模型。")

    def encode(self, src: torch.Tensor, src_lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """源序列 -> ``(memory (B, S, C), memory_padding_mask (B, S))``，mask 里 True = 补齐。"""
        memory, padding, _ = self._encode(src, src_lengths, need_weights=False)
        return memory, padding

    def _encode(self, src, src_lengths, need_weights: bool):
        check_token_ids(src, self.src_embedding.num_embeddings)
        B, S = src.shape
        self._check_length(S, "源序列")
        lengths = torch.as_tensor(src_lengths, device=src.device)
        check_lengths(lengths, S)
        padding = ~length_mask(lengths, S)  # (B, S)，True = 补齐
        x = self.dropout(self.positions(self.src_embedding(src) * math.sqrt(self.d_model)))  # (B, S, C)
        weights = []
        for layer in self.encoder_layers:
            x, w = layer(x, key_padding_mask=padding, need_weights=need_weights)
            weights.append(w)
        return self.encoder_norm(x), padding, weights  # memory (B, S, C)

    def new_cache(self, memory: torch.Tensor) -> Seq2SeqCache:
        """解码用的空缓存：自注意力最多存 context_len 个位置；交叉注意力的 k、v 由 memory (B, S, C) 现在就算好。"""
        head_dim = self.d_model // self.num_heads
        self_attention = KVCache(len(self.decoder_layers), memory.size(0), self.num_heads, head_dim, self.context_len)
        return Seq2SeqCache(self_attention, [layer.memory_keys_values(memory) for layer in self.decoder_layers])

    def decode(self, tgt_in: torch.Tensor, memory: torch.Tensor, memory_padding_mask: torch.Tensor,
               cache: Seq2SeqCache | None = None, last_only: bool = False) -> torch.Tensor:
        """已写出的目标前缀 tgt_in (B, T) + 编码结果 -> 每个位置的下一个词的 logits (B, T, V)。

        带 ``cache``（:meth:`new_cache`）时 tgt_in 只是新写的几个词，它们的位置从 ``cache.length`` 接着编号，
        自注意力的 k、v 存进缓存。``last_only=True`` 时只算最后一个位置的 logits (B, 1, V)。
        """
        return self._decode(tgt_in, memory, memory_padding_mask, False, cache, last_only)[0]

    def _decode(self, tgt_in, memory, memory_padding_mask, need_weights: bool, cache=None, last_only=False):
        check_token_ids(tgt_in, self.tgt_embedding.num_embeddings)
        T = tgt_in.size(1)
        start = 0 if cache is None else cache.length
        self._check_length(start + T, "目标序列")
        y = self.positions(self.tgt_embedding(tgt_in) * math.sqrt(self.d_model), start=start)  # (B, T, C)
        if self.aligned:
            # 逐位对齐的捷径：第 t 个位置（要写第 t 个字）加上源序列第 t 个位置的编码；补齐处和源序列以外不加
            end = min(start + T, memory.size(1))
            n = max(end - start, 0)  # 新位置里有几个落在源序列的范围内
            real = (~memory_padding_mask[:, start:end]).unsqueeze(-1).to(memory.dtype)  # (B, n, 1)
            y = torch.cat([y[:, :n] + memory[:, start:end] * real, y[:, n:]], dim=1)  # (B, T, C)
        y = self.dropout(y)
        self_weights, cross_weights = [], []
        for i, layer in enumerate(self.decoder_layers):
            y, sw, cw = layer(y, memory, memory_padding_mask, need_weights=need_weights, cache=cache, layer=i)
            self_weights.append(sw)
            cross_weights.append(cw)
        if cache is not None:
            cache.self_attention.advance(T)
        y = self.decoder_norm(y)
        if last_only:
            y = y[:, -1:]  # (B, 1, C)：解码时只要最后一个位置
        return self.head(y), self_weights, cross_weights  # logits (B, T, V)

    def forward(self, src: torch.Tensor, src_lengths: torch.Tensor, tgt_in: torch.Tensor) -> torch.Tensor:
        """``(src (B, S), src_lengths (B,), tgt_in (B, T)) -> logits (B, T, tgt_vocab_size)``（老师强制）。"""
        memory, padding = self.encode(src, src_lengths)
        return self.decode(tgt_in, memory, padding)

    @torch.no_grad()
    def attention_weights(self, src: torch.Tensor, src_lengths: torch.Tensor, tgt_in: torch.Tensor) -> dict:
        """与 ``forward`` 同样的输入 -> 各层的注意力权重 ``{"encoder": [...], "self": [...], "cross": [...]}``。

        编码器自注意力 (B, H, S, S)、解码器自注意力 (B, H, T, T)、交叉注意力 (B, H, T, S)：
        行 = 正在写的位置，列 = 被看的位置，用来画热力图。
        """
        memory, padding, encoder = self._encode(src, src_lengths, need_weights=True)
        _, self_weights, cross_weights = self._decode(tgt_in, memory, padding, need_weights=True)
        return {"encoder": encoder, "self": self_weights, "cross": cross_weights}

    # ---------------------------------------------------------------- 解码

    @torch.no_grad()
    def greedy_decode(self, src, src_lengths, max_new_tokens: int | None = None, target_lengths=None,
                      allowed: torch.Tensor | None = None, use_cache: bool = True) -> list[list[int]]:
        """贪心解码：每一步写下概率最大的词，直到 <eos>。返回每个样本的词编号列表（不含 <bos>、<eos>）。

        参数：
            max_new_tokens: 最多写几个词（含 <eos>），默认 2 × 最长源序列 + 10（不超过 context_len）。
            target_lengths: (B,) 已知的输出长度（拼音 -> 汉字：与输入等长）；给了就正好写这么多词。
            allowed: 可选 (B, T, V) 布尔，限制第 t 个输出只能从 allowed[:, t] 里选（例如"读这个音的字"）。
            use_cache: 默认 True（KV 缓存，每步只算新的一个位置）；False 时每步重算整个前缀（结果相同）。

        与 ``beam_search(beam_size=1)`` 结果相同；这里直接比 logits 取最大，省去束搜索的簿记。
        """
        with eval_mode(self):
            decoder = Seq2SeqDecoder(self, src, src_lengths, target_lengths, allowed, use_cache)
            steps = decoder.steps(max_new_tokens)
            logits = decoder.start()  # (B, V)
            done = torch.zeros(logits.size(0), dtype=torch.bool, device=logits.device)
            written = []
            for step in range(steps):
                next_token = decoder.mask_logits(logits.float(), step).argmax(-1)  # (B,)
                next_token = next_token.masked_fill(done, self.pad_id)  # 已写完的样本只补 <pad>
                written.append(next_token)
                done |= next_token == self.eos_id
                if bool(done.all()) or step == steps - 1:
                    break
                logits = decoder.step(next_token)
            return [self._strip(row) for row in torch.stack(written, dim=1).tolist()]

    @torch.no_grad()
    def beam_search(self, src, src_lengths, beam_size: int = 4, max_new_tokens: int | None = None,
                    target_lengths=None, allowed: torch.Tensor | None = None, length_penalty: float = 1.0,
                    return_scores: bool = False, use_cache: bool = True):
        """束搜索：:func:`~aigc_lib.generation.beam_search_batch` 加上 :class:`Seq2SeqDecoder`。

        约定同语言模型的束搜索：每个样本保留 beam_size 条候选，写出 <eos> 的移进"已完成"；最后选
        ``对数概率之和 / 长度^length_penalty`` 最大的一条（长度含 <eos>）。length_penalty=0 就是比总对数概率，
        它偏爱短句；1 是比平均每个词的对数概率。beam_size=1 时与 :meth:`greedy_decode` 相同。
        其余参数同 greedy_decode；``return_scores=True`` 时另外返回每个结果的（归一化后的）得分。
        """
        with eval_mode(self):
            decoder = Seq2SeqDecoder(self, src, src_lengths, target_lengths, allowed, use_cache)
            found = beam_search_batch(decoder, beam_size, decoder.steps(max_new_tokens), stop_ids=[self.eos_id],
                                      length_penalty=length_penalty)
        results = [self._strip(ids) for ids, _ in found]
        return (results, [score for _, score in found]) if return_scores else results

    def _strip(self, ids: list[int]) -> list[int]:
        """去掉 <eos> 及其后的 <pad>。"""
        out = []
        for i in ids:
            if i in (self.eos_id, self.pad_id):
                break
            out.append(i)
        return out

    @torch.no_grad()
    def sequence_log_prob(self, src, src_lengths, targets: list[list[int]]) -> torch.Tensor:
        """给定输出序列（不含 <bos>/<eos> 的编号列表）的总对数概率 log P(y, <eos> | x)，(B,)。

        用"老师强制"一次算完；测试用它验证束搜索找到的分数。
        """
        with eval_mode(self):
            T = max(len(t) for t in targets) + 1
            tgt_in = torch.full((len(targets), T), self.pad_id, dtype=torch.long, device=src.device)
            tgt_out = torch.full_like(tgt_in, -100)
            for i, t in enumerate(targets):
                tgt_in[i, 0] = self.bos_id
                tgt_in[i, 1 : len(t) + 1] = torch.tensor(t, dtype=torch.long)
                tgt_out[i, : len(t)] = torch.tensor(t, dtype=torch.long)
                tgt_out[i, len(t)] = self.eos_id
            logp = F.log_softmax(self(src, src_lengths, tgt_in).float(), dim=-1)  # (B, T, V)
            picked = logp.gather(-1, tgt_out.clamp(min=0).unsqueeze(-1)).squeeze(-1)  # (B, T)
            return picked.masked_fill(tgt_out == -100, 0.0).sum(-1)


class Seq2SeqDecoder:
    """适配器：让编码器-解码器满足 :mod:`aigc_lib.generation` 的逐步协议，束搜索因此只有一份。

    * ``start()``：源序列编码一次，解码器读入 <bos>，返回第一个输出位置的 logits (B, V)；
    * ``step(tokens (N,))``：每一行接上新写的词，返回下一个位置的 logits (N, V)（带缓存时只算这一个位置）；
    * ``reorder(index)``：编码结果、缓存和每行的约束都跟着父候选走；
    * ``mask_logits(logits, step)``：这一步的约束——永远不写 <pad>、<bos>；给了 ``target_lengths`` (B,) 时
      第 L 步只能写 <eos>、之前不能写 <eos>（正好写 L 个词）；给了 ``allowed`` (B, T, V) 时第 t 步只能写
      ``allowed[:, t]`` 里的词（超出 T 的步不受限制）。

    >>> model = Seq2SeqTransformer(10, 12, d_model=16, num_heads=2).eval()
    >>> decoder = Seq2SeqDecoder(model, torch.tensor([[4, 5, 6]]), torch.tensor([3]))
    >>> decoder.start().shape, decoder.step(torch.tensor([7])).shape
    (torch.Size([1, 12]), torch.Size([1, 12]))
    """

    def __init__(self, model: Seq2SeqTransformer, src: torch.Tensor, src_lengths, target_lengths=None,
                 allowed: torch.Tensor | None = None, use_cache: bool = True) -> None:
        B = src.size(0)
        if target_lengths is not None:
            target_lengths = torch.as_tensor(target_lengths, device=src.device).long()
            if target_lengths.shape != (B,):
                raise ValueError(f"target_lengths 的形状应为 ({B},)（每个样本一个长度），收到 {tuple(target_lengths.shape)}。")
        if allowed is not None and (allowed.dtype != torch.bool or allowed.dim() != 3 or allowed.size(0) != B):
            raise ValueError("allowed 应是 (B, T, V) 的布尔张量：allowed[b, t, v] = 第 b 个样本的第 t 个输出可以是词 v。")
        self.model, self.src, self.src_lengths, self.use_cache = model, src, src_lengths, use_cache
        self.target_lengths = target_lengths
        self.allowed = None if allowed is None else allowed.to(src.device)

    def steps(self, max_new_tokens: int | None = None) -> int:
        """最多写几个词（含 <eos>）：给了 target_lengths 时是最长的 L + 1，否则是 max_new_tokens，
        默认 2 × 最长源序列 + 10（不超过 context_len）。"""
        context_len = self.model.context_len
        if self.target_lengths is not None:
            steps = int(self.target_lengths.max()) + 1
        elif max_new_tokens is not None:
            steps = max_new_tokens
        else:
            steps = min(context_len, 2 * int(torch.as_tensor(self.src_lengths).max()) + 10)
        if steps > context_len:
            raise ValueError(f"最多要解码 {steps} 步，超过了模型的 context_len={context_len}。"
                             "请减小 max_new_tokens 或 target_lengths。")
        return steps

    def start(self) -> torch.Tensor:
        model = self.model
        self.memory, self.padding = model.encode(self.src, self.src_lengths)  # (B, S, C), (B, S)
        self.sequences = torch.full((self.src.size(0), 1), model.bos_id, dtype=torch.long, device=self.src.device)
        self.cache = model.new_cache(self.memory) if self.use_cache else None
        return self._logits(self.sequences)

    def _logits(self, tokens: torch.Tensor) -> torch.Tensor:
        if self.cache is None:  # 不带缓存：整个前缀重算一遍
            return self.model.decode(self.sequences, self.memory, self.padding)[:, -1]  # (N, V)
        return self.model.decode(tokens, self.memory, self.padding, cache=self.cache, last_only=True)[:, -1]

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        self.sequences = torch.cat([self.sequences, tokens[:, None]], dim=1)  # (N, t+1)
        return self._logits(tokens[:, None])

    def reorder(self, index: torch.Tensor) -> None:
        self.sequences = self.sequences.index_select(0, index)
        self.memory, self.padding = self.memory.index_select(0, index), self.padding.index_select(0, index)
        if self.target_lengths is not None:
            self.target_lengths = self.target_lengths.index_select(0, index)
        if self.allowed is not None:
            self.allowed = self.allowed.index_select(0, index)
        if self.cache is not None:
            self.cache.reorder(index)

    def mask_logits(self, logits: torch.Tensor, step: int) -> torch.Tensor:
        model = self.model
        mask = torch.ones_like(logits, dtype=torch.bool)  # (N, V)，True = 这一步可以写
        mask[:, [model.pad_id, model.bos_id]] = False
        if self.allowed is not None and step < self.allowed.size(1):
            mask &= self.allowed[:, step]
        if self.target_lengths is not None:
            at_end = (self.target_lengths == step).unsqueeze(-1)  # (N, 1)
            eos_only = torch.zeros_like(mask)
            eos_only[:, model.eos_id] = True
            mask[:, model.eos_id] = False
            mask = torch.where(at_end, eos_only, mask)
        return logits.masked_fill(~mask, float("-inf"))
