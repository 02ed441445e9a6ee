"""用语言模型生成文本：贪心、温度采样、top-k、top-p（nucleus）、重复惩罚、停止符，以及束搜索。

任何满足下面约定的模型都能用（:class:`~aigc_lib.models.GPTLanguageModel` 和
:class:`~aigc_lib.models.LSTMLanguageModel` 都满足）::

    model(tokens (B, T), cache=None, last_only=False) -> logits (B, T, V)
    model.new_cache(batch_size) -> 缓存对象（有 .length 和 .reorder(index)），前向时原地更新
    model.context_len            -> 上下文长度；None 表示不限（RNN）

生成一个字的流程（每一步都一样）::

    logits (V,) --重复惩罚--> --除以温度--> --top-k--> --top-p--> softmax --> 采样（或取最大）

单独的几步也是公开函数（:func:`apply_repetition_penalty`、:func:`top_k_filter`、
:func:`top_p_filter`、:func:`next_token_probs`），第 09 章用它们画温度对分布的影响。

束搜索只有一份：:func:`beam_search_batch` 通过"逐步协议"（第 2 节）和模型打交道，语言模型用
:class:`LanguageModelDecoder`，编码器-解码器用 :class:`~aigc_lib.models.seq2seq.Seq2SeqDecoder`；
:func:`beam_search` 是语言模型、一个提示的入口。

约定：
  * 提示可以是编号列表（返回新生成的编号列表），也可以是字符串加 ``vocab``（按字编码，返回新生成的文本）。
    返回值只含新生成的部分，不含提示。
  * 空提示：需要一个开头，传 ``bos_id``（例如换行符的编号）就从它开始，否则报错。
  * 提示或生成的文本超过模型的 ``context_len`` 时，只看最后 ``context_len`` 个字（滑动窗口）。GPT 的位置编码
    是绝对的，窗口一移动缓存就作废了，所以超过 ``context_len`` 以后带缓存也要每步重算整个窗口。
  * 停止符：生成到其中任何一个就停下，停止符本身保留在结果里。
  * 给了 ``vocab`` 时不会生成 ``<pad>`` 和 ``<unk>``（它们不是文字）。
  * 可复现：``seed`` 给定时用自己的 ``torch.Generator`` 采样，同样的模型、提示和种子总得到同样的结果，
    而且不影响全局随机数；不给则用全局随机数（受 ``seed_everything`` 控制）。
"""

from __future__ import annotations

from typing import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .core.runtime import eval_mode

STRATEGIES = ("sample", "greedy")


# ---------------------------------------------------------------------------
# 1. 对 logits 的几种处理（每一步都一样）
# ---------------------------------------------------------------------------


def apply_repetition_penalty(logits: torch.Tensor, previous: Iterable[int], penalty: float) -> torch.Tensor:
    """CTRL（Keskar et al., 2019）的重复惩罚：出现过的词，logit 为正就除以 penalty，为负就乘以 penalty。

    两种情况都让它变小（penalty > 1 时），即概率变低。penalty = 1 不改变任何东西。
    ``logits`` 形状 (V,) 或 (B, V)（每行用同一组 previous）；返回新张量，不改原张量。

    >>> apply_repetition_penalty(torch.tensor([2.0, -1.0, 0.5]), [0, 1], 2.0).tolist()
    [1.0, -2.0, 0.5]
    """
    if penalty <= 0:
        raise ValueError(f"repetition_penalty 应 > 0（1 表示不惩罚，常用 1.1~1.5），收到 {penalty}。")
    if penalty == 1.0:
        return logits.clone()
    index = torch.tensor(sorted(set(int(i) for i in previous)), dtype=torch.long, device=logits.device)
    if index.numel() == 0:
        return logits.clone()
    out = logits.clone()
    chosen = out[..., index]
    out[..., index] = torch.where(chosen > 0, chosen / penalty, chosen * penalty)
    return out


def top_k_filter(logits: torch.Tensor, k: int | None) -> torch.Tensor:
    """只保留最大的 k 个 logits，其余设为 -inf（softmax 后概率为 0）。k 为 None 或 >= V 时不变。

    与第 k 大的值相等的也保留（并列时可能多于 k 个）。

    >>> top_k_filter(torch.tensor([1.0, 3.0, 2.0, 0.0]), 2).tolist()
    [-inf, 3.0, 2.0, -inf]
    """
    if k is None or k >= logits.size(-1):
        return logits
    if k < 1:
        raise ValueError(f"top_k 应是 >= 1 的整数（1 就是贪心），收到 {k}。")
    kth = logits.topk(k, dim=-1).values[..., -1:]  # (..., 1) 第 k 大的值
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p_filter(logits: torch.Tensor, p: float | None) -> torch.Tensor:
    """nucleus 采样（Holtzman et al., 2020）：按概率从大到小取词，取到累计概率 >= p 为止，其余设为 -inf。

    保留的是"累计概率达到 p 的最小集合"：一个词被保留，当且仅当比它概率大的词加起来还不到 p。
    所以概率最大的词总被保留；p 为 None 或 >= 1 时不变。

    >>> top_p_filter(torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05])), 0.7).isfinite().tolist()  # 0.5 + 0.3 >= 0.7
    [True, True, False, False]
    """
    if p is None or p >= 1.0:
        return logits
    if p <= 0:
        raise ValueError(f"top_p 应在 (0, 1] 之间（常用 0.9），收到 {p}。")
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    probs = sorted_logits.softmax(dim=-1)
    mass_before = probs.cumsum(dim=-1) - probs  # 排在它前面的词的累计概率
    remove_sorted = mass_before >= p
    remove = remove_sorted.scatter(-1, order, remove_sorted)  # 按原来的顺序放回
    return logits.masked_fill(remove, float("-inf"))


def next_token_probs(
    logits: torch.Tensor,
    previous: Iterable[int] = (),
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    repetition_penalty: float = 1.0,
    banned: Sequence[int] = (),
) -> torch.Tensor:
    """把最后一个位置的 logits (V,) 或 (B, V) 变成下一个词的概率分布，依次做：

    重复惩罚 -> 禁用词 -> 除以温度 T -> top-k -> top-p -> softmax，即 :math:`p_i \\propto \\exp(z_i / T)`。
    T < 1 让分布更尖（更保守），T > 1 更平（更多样、也更容易胡说）。
    """
    if temperature <= 0:
        raise ValueError(f"temperature 应 > 0（想要确定的结果请用 strategy='greedy'），收到 {temperature}。")
    logits = apply_repetition_penalty(logits.float(), previous, repetition_penalty)
    if banned:
        logits[..., list(banned)] = float("-inf")
    logits = top_k_filter(logits / temperature, top_k)
    logits = top_p_filter(logits, top_p)
    return logits.softmax(dim=-1)


# ---------------------------------------------------------------------------
# 2. 解码器的逐步协议：喂一个字，拿回下一个字的 logits
# ---------------------------------------------------------------------------
#
# 贪心、采样和束搜索都只通过下面四个方法和模型打交道（"逐步协议"）::
#
#     decoder.start()               -> logits (B, V)    读入每个样本的开头，给出第一个新词的 logits
#     decoder.step(tokens (N,))     -> logits (N, V)    每一行接上一个新词，给出下一个位置的 logits
#     decoder.reorder(index (N',))                      按 index 挑选/复制/删掉行（束搜索跟随父候选）
#     decoder.mask_logits(logits (N, V), step) -> logits  第 step 个新词不许写的词设为 -inf（约束）
#
# 语言模型用 LanguageModelDecoder；编码器-解码器用 models.seq2seq.Seq2SeqDecoder（源序列只编码一次），
# 所以同一个 beam_search_batch 两种模型都能用。


class LanguageModelDecoder:
    """把语言模型包成逐步协议：藏起"带不带缓存""超过上下文长度怎么办"。

    参数：model 见模块说明；sequences (B, T) 提示；use_cache 是否用 KV 缓存；
    banned 永远不写的词（例如 <pad>、<unk>）。
    """

    def __init__(self, model: nn.Module, sequences: torch.Tensor, use_cache: bool = True,
                 banned: Sequence[int] = ()) -> None:
        self.model, self.use_cache = model, use_cache
        self.window = getattr(model, "context_len", None)
        self.sequences, self.banned, self.cache = sequences, list(banned), None

    def start(self) -> torch.Tensor:
        """读入提示 (B, T)，返回最后一个位置的 logits (B, V)。"""
        return self._recompute()

    def _recompute(self) -> torch.Tensor:
        # 只看最后 window 个字；带缓存时重新建缓存，把这个窗口一次读进去
        context = self.sequences if self.window is None else self.sequences[:, -self.window :]
        self.cache = self.model.new_cache(context.size(0)) if self.use_cache else None
        return self.model(context, cache=self.cache, last_only=True)[:, -1]  # (B, V)

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        """在每条序列后面接上一个新字 tokens (B,)，返回下一个位置的 logits (B, V)。"""
        self.sequences = torch.cat([self.sequences, tokens[:, None]], dim=1)  # (B, T+1)
        if not self.use_cache:
            return self._recompute()  # 不带缓存：整段重新算一遍
        if self.window is not None and self.cache.length >= self.window:
            return self._recompute()  # 窗口满了：绝对位置变了，缓存作废
        return self.model(tokens[:, None], cache=self.cache)[:, -1]  # 只算新的一个位置

    def reorder(self, index: torch.Tensor) -> None:
        self.sequences = self.sequences.index_select(0, index)
        if self.cache is not None:
            self.cache.reorder(index)

    def mask_logits(self, logits: torch.Tensor, step: int) -> torch.Tensor:
        if self.banned:
            logits[:, self.banned] = float("-inf")
        return logits


# ---------------------------------------------------------------------------
# 3. 提示的编码与结果的解码
# ---------------------------------------------------------------------------


def _prompt_ids(prompt, vocab, bos_id: int | None) -> tuple[list[int], bool]:
    """提示 -> (编号列表, 是否是文本)。"""
    as_text = isinstance(prompt, str)
    if as_text:
        if vocab is None:
            raise ValueError("提示是字符串时需要 vocab=词表，用来把每个字变成编号；或者直接传编号列表。")
        ids = vocab.encode(list(prompt))
    else:
        ids = [int(i) for i in (prompt.tolist() if isinstance(prompt, torch.Tensor) else prompt)]
    if not ids:
        if bos_id is None:
            raise ValueError(
                "提示是空的：语言模型要根据前面的字预测下一个字，至少需要一个开头。"
                "请写一段提示，或传 bos_id=开头字的编号（例如 vocab['\\n']，表示从一句话的开头写起）。"
            )
        ids = [int(bos_id)]
    return ids, as_text


def _token_ids(tokens, vocab) -> set[int]:
    """停止符：编号，或给了 vocab 时也可以是字（字符串里的每个字都算一个停止符）。"""
    result = set()
    for token in tokens or ():
        if isinstance(token, str):
            if vocab is None:
                raise ValueError(f"停止符 {token!r} 是文字，需要同时传 vocab；或者直接给编号。")
            unknown = sorted({ch for ch in token if ch not in vocab})
            if unknown:
                raise ValueError(f"停止符里的 {''.join(unknown)!r} 不在词表里：模型永远写不出它，生成不会在那里停下。"
                                 "请换成词表里有的字（例如句号“。”），或者先检查 vocab 是不是训练这个模型时的那一个。")
            result.update(vocab[ch] for ch in token)
        else:
            result.add(int(token))
    return result


def _banned(vocab) -> list[int]:
    return [vocab.pad_id, vocab.unk_id] if vocab is not None else []


def _finish(ids: list[int], vocab, as_text: bool):
    return "".join(vocab.decode(ids)) if as_text else ids


def _check_model(model: nn.Module, use_cache: bool) -> torch.device:
    if use_cache and not hasattr(model, "new_cache"):
        raise TypeError(
            f"{type(model).__name__} 没有 new_cache()：它不支持带缓存的生成。请用 use_cache=False，"
            "或让模型实现 new_cache(batch_size) 和 model(tokens, cache=..., last_only=...)。"
        )
    return next(model.parameters()).device


# ---------------------------------------------------------------------------
# 4. 逐字生成与束搜索
# ---------------------------------------------------------------------------


@torch.no_grad()
def generate(
    model: nn.Module,
    prompt,
    max_new_tokens: int = 50,
    *,
    vocab=None,
    strategy: str = "sample",
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    repetition_penalty: float = 1.0,
    stop_tokens: Iterable = (),
    seed: int | None = None,
    use_cache: bool = True,
    bos_id: int | None = None,
    watermark=None,
):
    """从 ``prompt`` 接着写最多 ``max_new_tokens`` 个字。

    参数：
        model: 语言模型（见模块说明的调用约定）；会临时切到 eval 模式，结束后恢复。
        prompt: 编号列表 / 一维张量，或字符串（此时要给 ``vocab``，按字编码）。
        vocab: :class:`~aigc_lib.data.text.Vocab`；给了它，停止符可以写成字，且不会生成 <pad>、<unk>。
        strategy: ``"sample"``（按概率采样，默认）或 ``"greedy"``（每步取概率最大的字；
            temperature、top_k、top_p 不起作用，重复惩罚仍起作用）。
        temperature: 温度，> 0；top_k: 只在概率最大的 k 个字里采样；top_p: 只在累计概率达到 p 的
            最小集合里采样；repetition_penalty: > 1 时压低已出现过（提示和已生成部分）的字。
        stop_tokens: 生成到其中之一就停下（保留在结果里），例如 ``["。"]`` 或 ``[vocab["\\n"]]``。
        seed: 采样用的随机种子；给定时结果可复现且不动全局随机数。
        use_cache: 默认 True：提示只算一遍，之后每步只算一个新位置；False 时每步把全文重算一遍
            （结果相同，用来对照和测速）。
        bos_id: 提示为空时从这个编号开始。
        watermark: 绿名单水印（:class:`~aigc_lib.safety.watermark.Watermark`，或任何
            ``watermark(logits (V,), previous=上一个编号) -> logits`` 的函数），在其余处理之前作用于每一步的
            logits；None（默认）时结果与不加这个参数完全相同。

    返回新生成的部分：提示是字符串时返回字符串，否则返回编号列表。
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy={strategy!r} 无效，只能是 {' | '.join(STRATEGIES)}；束搜索请用 beam_search()。")
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens 应 >= 0，收到 {max_new_tokens}。")
    device = _check_model(model, use_cache)
    ids, as_text = _prompt_ids(prompt, vocab, bos_id)
    stops, banned = _token_ids(stop_tokens, vocab), _banned(vocab)
    # 采样在 CPU 上用自己的生成器做：不同设备、不同批次顺序下，同一个种子得到同样的结果
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    with eval_mode(model):
        decoder = LanguageModelDecoder(model, torch.tensor([ids], device=device), use_cache)
        new: list[int] = []
        logits = decoder.start() if max_new_tokens else None  # (1, V)
        for step in range(max_new_tokens):
            history = ids + new  # 重复惩罚看提示和已经生成的全部
            if watermark is not None:  # 水印看的是上一个字：提示的最后一个字，或刚生成的字
                logits = watermark(logits.float(), previous=history[-1])
            if strategy == "greedy":
                scores = apply_repetition_penalty(logits[0].float(), history, repetition_penalty)
                if banned:
                    scores[banned] = float("-inf")
                token = int(scores.argmax())
            else:
                probs = next_token_probs(logits[0], history, temperature=temperature, top_k=top_k, top_p=top_p,
                                         repetition_penalty=repetition_penalty, banned=banned)
                token = int(torch.multinomial(probs.cpu(), 1, generator=generator))
            new.append(token)
            if token in stops or step == max_new_tokens - 1:
                break  # 最后一步不必再算下一个位置
            logits = decoder.step(torch.tensor([token], device=device))
    return _finish(new, vocab, as_text)


@torch.no_grad()
def beam_search_batch(
    decoder,
    beam_size: int,
    max_new_tokens: int,
    *,
    stop_ids: Iterable[int] = (),
    length_penalty: float = 1.0,
    nbest: bool = False,
) -> list:
    """束搜索（唯一的一份实现）：对 ``decoder`` 里的 B 个样本各自搜索，返回每个样本的 ``(编号列表, 得分)``。

    ``nbest=True`` 时每个样本返回一个列表：搜索结束时留下的全部候选 ``[(编号列表, 得分), ...]``，按得分从高到低
    （第一个就是 ``nbest=False`` 时返回的那个），供重打分用（拼音的 ``rescoring.py``）。

    ``decoder`` 满足逐步协议（见上面第 2 节）：语言模型用 :class:`LanguageModelDecoder`，
    编码器-解码器用 :class:`~aigc_lib.models.seq2seq.Seq2SeqDecoder`。约定：

    * **得分** = :math:`\\frac{1}{|y|^{\\alpha}} \\sum_t \\log p(y_t \\mid y_{<t}, x)`，α = ``length_penalty``，
      |y| 是新写的词数（含停止符）。α = 0 比总对数概率（偏爱短句），α = 1 比平均每个词的对数概率。
      对数概率是模型的 log_softmax；``decoder.mask_logits`` 禁掉的词为 -inf，其余的不重新归一化。
    * **束**：每步从每个样本仍在扩展的候选的全部扩展里取累计对数概率最高的 ``beam_size`` 个；以停止符
      （``stop_ids``）结尾的移进这个样本的"已完成"，其余的继续扩展（所以下一步扩展的可能少于 beam_size 条，
      再下一步又取满）。
    * **结束**：一个样本没有候选可扩展，或者仍在扩展的候选已不可能超过它最好的已完成句子时结束；
      所有样本都写满 ``max_new_tokens`` 个词时全部结束。最后在已完成的和仍在扩展的候选里选得分最高的
      （并列时先完成的优先）。
    * ``beam_size=1`` 就是每步取对数概率最大的词（贪心）；束宽足够大（V^(n-1)）时就是穷举。

    返回的编号含停止符（如果写到了）；得分是上面归一化后的得分。
    """
    if beam_size < 1:
        raise ValueError(f"beam_size 应 >= 1（1 就是贪心解码），收到 {beam_size}。")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens 应 >= 1，收到 {max_new_tokens}。")
    stops = set(stop_ids)

    def normalised(score: float, length: int) -> float:
        return score / (length**length_penalty)

    def best_possible(score: float, length: int) -> float:
        # 累计对数概率只会变小（<= 0）；α > 0 时除以更长的长度反而让得分变大，最多到 max_new_tokens
        return max(normalised(score, length), normalised(score, max_new_tokens))

    logits = decoder.start()  # (B, V)：每个样本一开始只有一条候选
    B, device = logits.size(0), logits.device
    # 仍在扩展的候选按样本排成连续的行：active[i] 是第 i 组的样本编号，groups[i] 是这组的候选
    active = list(range(B))
    groups: list[list[list[int]]] = [[[]] for _ in range(B)]
    scores = torch.zeros(B, device=device)  # (N,) 每一行的累计对数概率
    finished: list[list[tuple[float, list[int]]]] = [[] for _ in range(B)]  # 每个样本的 (得分, 编号)
    for step in range(max_new_tokens):
        log_probs = decoder.mask_logits(F.log_softmax(logits.float(), dim=-1), step)  # (N, V)
        total = log_probs + scores[:, None]  # (N, V)
        # 每组补成 beam_size 行（补的是 -inf），一次 topk 就给出每个样本的前 beam_size 个扩展
        V, K = total.size(-1), beam_size
        sizes = [len(g) for g in groups]
        slots = torch.tensor([i * K + j for i, n in enumerate(sizes) for j in range(n)], device=device)
        padded = total.new_full((len(groups) * K, V), float("-inf")).index_copy(0, slots, total)
        top_scores, top_index = padded.view(len(groups), K * V).topk(K, dim=-1)  # (G, K)
        first_row = [0]
        for n in sizes:
            first_row.append(first_row[-1] + n)
        next_active, next_groups, parents, tokens, alive_scores = [], [], [], [], []
        for i, (example, row_scores, row_index) in enumerate(zip(active, top_scores.tolist(), top_index.tolist())):
            beams, alive = [], []
            for score, index in zip(row_scores, row_index):
                parent, token = divmod(index, V)
                if score == float("-inf"):
                    break
                sequence = groups[i][parent] + [token]
                if token in stops:
                    finished[example].append((normalised(score, step + 1), sequence))
                else:
                    beams.append(sequence)
                    alive.append((first_row[i] + parent, token, score))
            done = not beams or step == max_new_tokens - 1
            if not done and finished[example]:
                # 仍在扩展的候选再怎么写也赢不了最好的已完成句子
                done = max(best_possible(s, step + 1) for _, _, s in alive) <= max(f[0] for f in finished[example])
            if done:
                finished[example] += [(normalised(s, step + 1), b) for b, (_, _, s) in zip(beams, alive)]
                continue
            next_active.append(example)
            next_groups.append(beams)
            for parent, token, score in alive:
                parents.append(parent)
                tokens.append(token)
                alive_scores.append(score)
        if not next_active:
            break
        active, groups = next_active, next_groups
        scores = torch.tensor(alive_scores, device=device)
        decoder.reorder(torch.tensor(parents, device=device))
        logits = decoder.step(torch.tensor(tokens, device=device))  # (N, V)
    if nbest:  # sorted 是稳定的：得分并列时先完成的在前，与下面取最好的一个的规则相同
        return [[(ids, score) for score, ids in sorted(c, key=lambda c: -c[0])] for c in finished]
    results = []
    for candidates in finished:
        # 没有任何候选：每一步的词都被 mask_logits 禁光了
        best_score, best = max(candidates, key=lambda c: c[0], default=(float("-inf"), []))
        results.append((best, best_score))
    return results


@torch.no_grad()
def beam_search(
    model: nn.Module,
    prompt,
    beam_size: int = 4,
    max_new_tokens: int = 50,
    *,
    vocab=None,
    length_penalty: float = 1.0,
    stop_tokens: Iterable = (),
    use_cache: bool = True,
    bos_id: int | None = None,
    return_scores: bool = False,
):
    """语言模型的束搜索：从 ``prompt`` 接着写，返回得分最高的续写。搜索本身见 :func:`beam_search_batch`
    （得分 = 对数概率之和 / 长度^length_penalty，写到停止符或 ``max_new_tokens`` 个字为止）。

    参数与返回值同 :func:`generate`（提示、vocab、停止符、缓存、bos_id）；``return_scores=True`` 时
    返回 ``(结果, 归一化得分)``。带缓存时每步按父候选重排缓存（``cache.reorder``）。
    """
    device = _check_model(model, use_cache)  # beam_size、max_new_tokens 由 beam_search_batch 检查
    ids, as_text = _prompt_ids(prompt, vocab, bos_id)
    with eval_mode(model):
        decoder = LanguageModelDecoder(model, torch.tensor([ids], device=device), use_cache, banned=_banned(vocab))
        [(best, best_score)] = beam_search_batch(decoder, beam_size, max_new_tokens,
                                                 stop_ids=_token_ids(stop_tokens, vocab), length_penalty=length_penalty)
    result = _finish(best, vocab, as_text)
    return (result, best_score) if return_scores else result
