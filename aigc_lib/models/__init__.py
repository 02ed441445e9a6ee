"""模型：每个文件一个模型家族，只接收张量，不关心数据从哪来、怎么训练。"""

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
from .tagger import CRF, BiLSTMTagger, lengths_to_mask, tagger_step
from .embeddings import (
    GloVe,
    SkipGram,
    TensorBatches,
    WordVectors,
    build_vocab,
    cooccurrence,
    encode_corpus,
    glove_step,
    keep_probabilities,
    negative_sampling_loss,
    negative_table,
    sgns_update_,
    skipgram_pairs,
    skipgram_step,
    subsample,
    train_skipgram_fast,
)
from .rnn import LSTMLanguageModel, LSTMState
from .transformer import GPTBlock, GPTLanguageModel, KVCache
from .seq2seq import Seq2SeqTransformer, TransformerDecoderLayer
