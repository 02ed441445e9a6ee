"""Transformer 编码器-解码器（seq2seq）：把一个序列"翻译"成另一个序列。

从上往下读：
  1. ``TransformerDecoderLayer``：解码器的一层 = 带因果掩码的自注意力 + 交叉注意力 + 前馈层；
  2. ``Seq2SeqTransformer``：编码器读完整个源序列（双向），解码器一个一个地写目标序列，
     每写一个词都通过交叉注意力回头"看"源序列；
  3. 解码：``greedy_decode``（每步取最可能的词）和 ``beam_search``（每步保留 k 条最好的候选）。

训练时用"老师强制"（teacher forcing）：把正确答案右移一位喂给解码器，一次算出所有位置的预测::

    tgt_in   <bos> 我  爱  你
    tgt_out   我   爱  你 <eos>

    logits = model(src (B, S), src_lengths (B,), tgt_in (B, T))     # (B, T, V)
    loss = F.cross_entropy(logits.flatten(0, 1), tgt_out.flatten())  # 补齐位置的 tgt_out 是 -100

所以批次 ``(src, src_lengths, tgt_in, tgt_out)`` 直接交给 ``fit``（目标在最后，见
:func:`aigc_lib.pinyin_data.seq2seq_collate`）。两种掩码：
  * 源序列的补齐掩码：编码器自注意力和解码器交叉注意力都不许看源序列里补齐的位置；
  * 目标序列的因果掩码：第 t 个位置只能看 ``tgt_in`` 的前 t+1 个词，否则训练时就"偷看"了答案。
目标序列在右边补齐，因果掩码已经挡住了它们，不需要另加补齐掩码。

为了好读，解码时每一步都重新算一遍整个已生成的前缀（目标序列很短时足够快）；
第 09 章的 KV 缓存可以把这一步变成只算最新的一个位置。
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..runtime import eval_mode
from .layers import check_token_ids, length_mask
from .transformer import MultiHeadAttention, SinusoidalPositions, TransformerEncoderLayer


class TransformerDecoderLayer(nn.Module):
    """解码器的一层（pre-norm），比编码器层多了中间的交叉注意力::

        y = y + Dropout(SelfAttention(LN(y), causal=True))       # 只看已经写出的词
        y = y + Dropout(CrossAttention(LN(y), memory, memory))    # 查询来自解码器，键和值来自编码器
        y = y + Dropout(FFN(LN(y)))

    计算与 ``nn.TransformerDecoderLayer(norm_first=True, activation="gelu", batch_first=True)`` 相同
    （测试里复制权重逐元素对照）。

    ``forward(y (B, T, C), memory (B, S, C), memory_padding_mask (B, S) 或 None, need_weights=False)
    -> (y (B, T, C), self_weights (B, H, T, T) 或 None, cross_weights (B, H, T, S) 或 None)``；
    memory_padding_mask 为 True 的位置是源序列的补齐。
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

    def forward(self, y, memory, memory_padding_mask=None, need_weights: bool = False):
        attended, self_weights = self.self_attn(self.norm1(y), causal=True, need_weights=need_weights)
        y = y + self.dropout(attended)  # (B, T, C)
        attended, cross_weights = self.cross_attn(
            self.norm2(y), memory, memory, key_padding_mask=memory_padding_mask, need_weights=need_weights
        )
        y = y + self.dropout(attended)  # (B, T, C)
        y = y + self.dropout(self.ff(self.norm3(y)))  # (B, T, C)
        return y, self_weights, cross_weights


class Seq2SeqTransformer(nn.Module):
    """Transformer 编码器-解码器。

    参数：
        src_vocab_size, tgt_vocab_size: 源、目标词表大小（拼音 -> 汉字时分别是音节表和字表）。
        d_model, num_heads, dim_feedforward, dropout: 每层的宽度、头数、前馈层宽度、dropout。
        num_encoder_layers, num_decoder_layers: 编码器、解码器的层数。
        max_len: 源和目标序列的最大长度（位置编码表的大小）。
        pad_id, bos_id, eos_id: 补齐、句首、句末的编号（两边词表共用同样的约定：0、2、3）。
        tie_embeddings: 解码器的输入词向量与输出层共享权重（少一大块参数，小数据上通常更好）。
        aligned: 只用于**输出与输入逐位对齐、等长**的任务（拼音 -> 汉字、音译、逐字纠错）：
            解码器第 t 个位置的输入再加上编码器第 t 个位置的输出，不必先靠交叉注意力学会"对齐"。
            它仍然是完整的 seq2seq（交叉注意力、逐词解码都在），只是多了一条捷径；默认关闭。

    ``model(src, src_lengths, tgt_in) -> logits (B, T, tgt_vocab_size)``；
    ``return_attention=True`` 时返回 ``(logits, {"encoder": [...], "self": [...], "cross": [...]})``，
    每项是各层的注意力权重，交叉注意力是 (B, H, T, S)：行 = 目标位置，列 = 源位置，用来画热力图。

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
        max_len: int = 256,
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
            dim_feedforward=dim_feedforward, dropout=dropout, max_len=max_len, pad_id=pad_id, bos_id=bos_id,
            eos_id=eos_id, tie_embeddings=tie_embeddings, aligned=aligned,
        )
        self.d_model, self.max_len, self.aligned = d_model, max_len, aligned
        self.pad_id, self.bos_id, self.eos_id = pad_id, bos_id, eos_id
        self.src_embedding = nn.Embedding(src_vocab_size, d_model, padding_idx=pad_id)
        self.tgt_embedding = nn.Embedding(tgt_vocab_size, d_model, padding_idx=pad_id)
        self.positions = SinusoidalPositions(d_model, max_len)
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
        if T > self.max_len:
            raise ValueError(
                f"{what}长 {T}，超过了模型的 max_len={self.max_len}。请截断输入，或用更大的 max_len 构造模型。"
            )

    def encode(self, src: torch.Tensor, src_lengths: torch.Tensor, return_attention: bool = False):
        """源序列 -> ``(memory (B, S, C), memory_padding_mask (B, S))``（以及各层自注意力权重）。"""
        check_token_ids(src, self.src_embedding.num_embeddings)
        B, S = src.shape
        self._check_length(S, "源序列")
        lengths = torch.as_tensor(src_lengths, device=src.device).clamp(min=1, max=S)  # 空序列当作 1 个补齐词
        padding = ~length_mask(lengths, S)  # (B, S)，True = 补齐
        x = self.dropout(self.positions(self.src_embedding(src) * math.sqrt(self.d_model)))  # (B, S, C)
        weights = []
        for layer in self.encoder_layers:
            x, w = layer(x, key_padding_mask=padding, need_weights=return_attention)
            weights.append(w)
        memory = self.encoder_norm(x)  # (B, S, C)
        return (memory, padding, weights) if return_attention else (memory, padding)

    def decode(self, tgt_in: torch.Tensor, memory: torch.Tensor, memory_padding_mask: torch.Tensor,
               return_attention: bool = False):
        """已写出的目标前缀 tgt_in (B, T) + 编码结果 -> 每个位置的下一个词的 logits (B, T, V)。"""
        check_token_ids(tgt_in, self.tgt_embedding.num_embeddings)
        T = tgt_in.size(1)
        self._check_length(T, "目标序列")
        y = self.positions(self.tgt_embedding(tgt_in) * math.sqrt(self.d_model))  # (B, T, C)
        if self.aligned:
            # 逐位对齐的捷径：第 t 个位置（要写第 t 个字）加上源序列第 t 个位置的编码；补齐处不加
            n = min(T, memory.size(1))
            real = (~memory_padding_mask[:, :n]).unsqueeze(-1).to(memory.dtype)  # (B, n, 1)
            y = torch.cat([y[:, :n] + memory[:, :n] * real, y[:, n:]], dim=1)  # (B, T, C)
        y = self.dropout(y)
        self_weights, cross_weights = [], []
        for layer in self.decoder_layers:
            y, sw, cw = layer(y, memory, memory_padding_mask, need_weights=return_attention)
            self_weights.append(sw)
            cross_weights.append(cw)
        logits = self.head(self.decoder_norm(y))  # (B, T, V)
        return (logits, self_weights, cross_weights) if return_attention else logits

    def forward(self, src: torch.Tensor, src_lengths: torch.Tensor, tgt_in: torch.Tensor,
                return_attention: bool = False):
        if not return_attention:
            memory, padding = self.encode(src, src_lengths)
            return self.decode(tgt_in, memory, padding)
        memory, padding, encoder_weights = self.encode(src, src_lengths, return_attention=True)
        logits, self_weights, cross_weights = self.decode(tgt_in, memory, padding, return_attention=True)
        return logits, {"encoder": encoder_weights, "self": self_weights, "cross": cross_weights}

    # ---------------------------------------------------------------- 解码

    def _step_mask(self, step: int, batch: int, allowed, target_lengths, device) -> torch.Tensor:
        """第 step 个输出位置上哪些词可以写：(batch, V) 布尔，True = 可以。

        永远不写 <pad>、<bos>；给了 target_lengths 时，第 L 步只能写 <eos>，之前不能写 <eos>；
        给了 allowed (batch, T, V) 时再与它的第 step 行相与（超出 T 的步不受限制）。
        """
        V = self.head.out_features
        mask = torch.ones(batch, V, dtype=torch.bool, device=device)
        mask[:, [self.pad_id, self.bos_id]] = False
        if allowed is not None and step < allowed.size(1):
            mask &= allowed[:, step].to(device)
        if target_lengths is not None:
            at_end = (target_lengths == step).unsqueeze(-1)  # (batch, 1)
            eos_only = torch.zeros_like(mask)
            eos_only[:, self.eos_id] = True
            mask[:, self.eos_id] = False
            mask = torch.where(at_end, eos_only, mask)
        return mask

    def _decode_plan(self, src, src_lengths, max_len, target_lengths, allowed):
        """共用的准备：检查参数，算出最多走几步。"""
        B = src.size(0)
        if target_lengths is not None:
            target_lengths = torch.as_tensor(target_lengths, device=src.device).long()
            if target_lengths.shape != (B,):
                raise ValueError(f"target_lengths 的形状应为 ({B},)（每个样本一个长度），收到 {tuple(target_lengths.shape)}。")
            steps = int(target_lengths.max()) + 1
        else:
            steps = max_len if max_len is not None else min(self.max_len, 2 * int(torch.as_tensor(src_lengths).max()) + 10)
        if steps > self.max_len:
            raise ValueError(f"最多要解码 {steps} 步，超过了模型的 max_len={self.max_len}。请减小 max_len 或 target_lengths。")
        if allowed is not None and (allowed.dtype != torch.bool or allowed.dim() != 3 or allowed.size(0) != B):
            raise ValueError("allowed 应是 (B, T, V) 的布尔张量：allowed[b, t, v] = 第 b 个样本的第 t 个输出可以是词 v。")
        return steps, target_lengths

    @torch.no_grad()
    def greedy_decode(self, src, src_lengths, max_len: int | None = None, target_lengths=None,
                      allowed: torch.Tensor | None = None) -> list[list[int]]:
        """贪心解码：每一步写下概率最大的词，直到 <eos>。返回每个样本的词编号列表（不含 <bos>、<eos>）。

        参数：
            max_len: 最多写几个词（含 <eos>），默认 2 × 最长源序列 + 10。
            target_lengths: (B,) 已知的输出长度（拼音 -> 汉字：与输入等长）；给了就正好写这么多词。
            allowed: 可选 (B, T, V) 布尔，限制第 t 个输出只能从 allowed[:, t] 里选（例如"读这个音的字"）。
        """
        with eval_mode(self):
            steps, target_lengths = self._decode_plan(src, src_lengths, max_len, target_lengths, allowed)
            memory, padding = self.encode(src, src_lengths)
            B = src.size(0)
            ys = torch.full((B, 1), self.bos_id, dtype=torch.long, device=src.device)  # (B, 1)
            done = torch.zeros(B, dtype=torch.bool, device=src.device)
            for step in range(steps):
                logits = self.decode(ys, memory, padding)[:, -1].float()  # (B, V)：只要最后一个位置
                mask = self._step_mask(step, B, allowed, target_lengths, src.device)
                next_token = logits.masked_fill(~mask, float("-inf")).argmax(-1)  # (B,)
                next_token = next_token.masked_fill(done, self.pad_id)  # 已写完的样本只补 <pad>
                ys = torch.cat([ys, next_token.unsqueeze(1)], dim=1)
                done |= next_token == self.eos_id
                if bool(done.all()):
                    break
            return [self._strip(row) for row in ys[:, 1:].tolist()]

    @torch.no_grad()
    def beam_search(self, src, src_lengths, beam_size: int = 4, max_len: int | None = None, target_lengths=None,
                    allowed: torch.Tensor | None = None, length_penalty: float = 1.0,
                    return_scores: bool = False):
        """束搜索：每一步为每个样本保留 beam_size 条累计对数概率最高的候选。

        结束时在 beam_size 条候选里选 ``对数概率 / 长度^length_penalty`` 最大的一条（长度含 <eos>）：
        length_penalty=0 就是比总对数概率，它偏爱短句；1 是比平均每个词的对数概率。
        beam_size=1 时与 :meth:`greedy_decode` 完全相同。其余参数同 greedy_decode。
        ``return_scores=True`` 时另外返回每个结果的总对数概率。
        """
        if beam_size < 1:
            raise ValueError(f"beam_size={beam_size} 无效，至少为 1（1 就是贪心解码）。")
        with eval_mode(self):
            steps, target_lengths = self._decode_plan(src, src_lengths, max_len, target_lengths, allowed)
            B, K, device = src.size(0), beam_size, src.device
            memory, padding = self.encode(src, src_lengths)
            memory = memory.repeat_interleave(K, dim=0)  # (B*K, S, C)：每个样本复制 K 份
            padding = padding.repeat_interleave(K, dim=0)  # (B*K, S)
            if allowed is not None:
                allowed = allowed.repeat_interleave(K, dim=0)
            if target_lengths is not None:
                target_lengths = target_lengths.repeat_interleave(K)
            ys = torch.full((B * K, 1), self.bos_id, dtype=torch.long, device=device)  # (B*K, 1)
            scores = torch.full((B, K), float("-inf"), device=device)
            scores[:, 0] = 0.0  # 一开始只有一条候选，其余 K-1 条是占位
            done = torch.zeros(B * K, dtype=torch.bool, device=device)
            lengths = torch.zeros(B * K, device=device)  # 每条候选写了几个词（含 <eos>）
            for step in range(steps):
                logp = F.log_softmax(self.decode(ys, memory, padding)[:, -1].float(), dim=-1)  # (B*K, V)
                mask = self._step_mask(step, B * K, allowed, target_lengths, device)
                logp = logp.masked_fill(~mask, float("-inf"))
                # 已结束的候选只能以 0 的代价接 <pad>，保持原分数，不再变长
                finished = torch.full_like(logp, float("-inf"))
                finished[:, self.pad_id] = 0.0
                logp = torch.where(done.unsqueeze(-1), finished, logp)
                V = logp.size(-1)
                total = (scores.unsqueeze(-1) + logp.view(B, K, V)).view(B, K * V)  # (B, K*V)
                scores, flat = total.topk(K, dim=-1)  # (B, K)
                beam = flat // V  # 来自哪条旧候选
                token = flat % V  # 接上哪个词
                rows = (beam + torch.arange(B, device=device).unsqueeze(1) * K).view(-1)  # (B*K,)
                ys = torch.cat([ys[rows], token.view(-1, 1)], dim=1)
                done = done[rows]
                lengths = lengths[rows] + (~done).float()
                done = done | (token.view(-1) == self.eos_id)
                if bool(done.all()):
                    break
            normalized = scores / lengths.view(B, K).clamp(min=1) ** length_penalty  # (B, K)
            best = normalized.argmax(-1)  # (B,)
            rows = best + torch.arange(B, device=device) * K
            results = [self._strip(row) for row in ys[rows, 1:].tolist()]
            if return_scores:
                return results, scores.gather(1, best.unsqueeze(1)).squeeze(1).tolist()
            return results

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
