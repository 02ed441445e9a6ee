"""模型：每个文件一个模型家族，只接收张量，不关心数据从哪来、怎么训练。

共同的接口（换一个家族只需改构造的那一行）：

* 分类器 ``RNNClassifier``、``KerasStyleLSTM``、``TransformerClassifier``：
  ``model(tokens (B, T), lengths (B,)) -> logits (B, num_classes)``，永远是这一个形状
  （``KerasStyleLSTM`` 是 Keras 的 Dense(1)，num_classes = 1）。
  Transformer 的注意力权重另由 ``model.attention_weights(tokens, lengths)`` 给出。
* 序列标注 ``BiLSTMTagger``：``model(tokens, lengths) -> 发射分数 (B, T, num_tags)``。
* 语言模型 ``LSTMLanguageModel``、``GPTLanguageModel``：``model(tokens, cache=None) -> logits (B, T, V)``；
  ``model.context_len`` 是最长的上下文（LSTM 为 None，不限）。

``tokens`` 右侧用 padding_idx（默认 0）补齐，``lengths`` 是每句的真实长度（见 ``aigc_lib.data.batching``）。

**空句子（长度 0）在每个家族里都报同一个错**：``ValueError``，说出是批里第几条，请在组批前过滤掉。
不把它悄悄当成 1 个补齐词来读。检查由 ``layers.check_lengths`` 统一完成；词编号越界由
``layers.check_token_ids`` 给出清楚的中文错误。两者只在张量在 CPU 上、或打开调试开关
（环境变量 ``AIGC_DEBUG=1``）时看数值，免得 GPU 每一批都停下来同步；RNN 家族和标注器的长度本来就在
CPU 上，所以总会检查。细节见 ``aigc_lib/models/layers.py`` 开头。

词向量的训练数据、快速训练和文件读写在 :mod:`aigc_lib.data.wordvectors`，这里只有 ``SkipGram``、``GloVe`` 模块。
"""

from .layers import check_lengths, check_token_ids, length_mask, make_embedding
from .rnn import KerasStyleLSTM, RNNCell, RNNClassifier, unroll
from .transformer import (
    LearnedPositions,
    MultiHeadAttention,
    SinusoidalPositions,
    TransformerClassifier,
    TransformerEncoderLayer,
    causal_mask,
    scaled_dot_product_attention_explicit,
    sinusoidal_positions,
)
from .tagger import CRF, BiLSTMTagger
from .embeddings import GloVe, SkipGram, glove_step, negative_sampling_loss, negative_table, skipgram_step
from .rnn import LSTMLanguageModel, LSTMState
from .transformer import GPTBlock, GPTLanguageModel, KVCache
from .seq2seq import Seq2SeqTransformer, TransformerDecoderLayer
from .lora import GPT_TARGETS, LoRAGPT, LoRALinear, SplitEmbedding, TiedHead, add_lora, merge_lora
