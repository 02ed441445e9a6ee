"""aigc_lib：中文文本生成课程的小型 PyTorch 库。

每个 notebook 都从这里导入；每个函数都有测试，可以单独复制到自己的项目里。
"""

__version__ = "0.1.0"

from .core.runtime import PROFILES, Timer, describe, device, eval_mode, pick, profile, seed_everything
from .metrics import segmentation_prf
from .metrics import (
    accuracy,
    average_precision,
    bio_to_spans,
    bleu,
    classification_report,
    confusion_matrix,
    distinct_n,
    entity_prf,
    perplexity,
    precision_recall_curve,
    precision_recall_f1,
    roc_auc,
    roc_curve,
    rouge_l,
    rouge_l_corpus,
    token_accuracy,
)
from .core import optim
from .core.optim import lr_range_test
from .plotting import (
    chinese_font_name,
    plot_confusion_matrix,
    plot_embedding_map,
    plot_heatmap,
    progress,
    use_chinese_font,
)
from .data.text import (
    Vocab,
    clean_text,
    collapse_punctuation,
    normalize_whitespace,
    normalize_width,
    preprocess,
    remove_emoji,
    remove_urls,
    strip_html,
    to_simplified,
    tokenize,
)
from .data.corpora import (
    bio_entities,
    bmes_labels,
    bmes_to_words,
    detect_encoding,
    entity_spans,
    find_boilerplate,
    load_labeled,
    load_peoples_daily,
    load_reviews,
    peoples_daily_stats,
    raw_reviews,
    read_text,
    review_stats,
)
from .imbalance import FocalLoss, apply_threshold, best_threshold, class_counts, class_weights, resampling_sampler
from .data.augment import augment_dataset, augment_tokens, random_deletion, random_swap, synonym_replacement
from .compress import (
    count_parameters,
    distillation_loss,
    magnitude_prune,
    make_permanent,
    measure_latency,
    model_size_bytes,
    quantize_dynamic_int8,
    sparsity,
)
from .data.batching import BucketBatchSampler, EncodedDataset, make_loader, pad_batch, pad_collate
from .models import KerasStyleLSTM, RNNClassifier, TransformerClassifier
from .core.training import History, NonFiniteLossError, evaluate, fit, steps_per_epoch, warmup_cosine, warmup_linear
from .core.checkpoint import CheckpointMismatchError, load_checkpoint, save_checkpoint
from .models import CRF, BiLSTMTagger, GloVe, SkipGram, glove_step, skipgram_step, tagger_step
from .data.wordvectors import WordVectors, train_skipgram_fast
from .models import GPTLanguageModel, LSTMLanguageModel
from .generation import beam_search, generate, next_token_probs
from .models import Seq2SeqTransformer
from .tasks.pinyin.data import char_accuracy, pinyin_pairs, seq2seq_collate, to_pinyin
from .tasks.pinyin.baselines import BigramHMM, MostFrequentChar
