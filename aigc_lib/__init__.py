"""aigc_lib：中文文本生成课程的小型 PyTorch 库。

每个 notebook 都从这里导入；每个函数都有测试，可以单独复制到自己的项目里。这里列出的是公开接口，
按库的分层排好（下层不导入上层）；更细的函数在各自的模块里，例如 ``aigc_lib.data.corpora``。

============  =====================================================================================
层             内容
============  =====================================================================================
core/         运行环境（设备、档位、种子、计时）、唯一的训练循环 ``fit``、学习率调度、手写优化器、检查点
data/         清洗与切分、词表、字节级 BPE、课程语料与读者的文件、补齐与分桶、数据增强、词向量训练
models/       每个模型家族一个文件；都接收张量：分类器 ``model(tokens, lengths) -> logits``
metrics/      分类、排序、序列标注、生成的指标（对照 scikit-learn、sacrebleu、seqeval）
generation    采样、束搜索（唯一的一份，语言模型与编码器-解码器共用）、KV 缓存
tasks/        ``aigc`` 命令的任务：每个任务一个文件夹（数据准备、基线、尺寸、模型表）
scale/        规模：训练的内存账单（公式与测量）、缩放定律拟合、算力预算与外推到真实大小
zoo/          模型库：课程自带的参考模型（safetensors + 来历），``pretrained("lm-gpt")``
safety/       负责任的 AIGC：个人信息遮盖、绿名单水印、WEAT 与反事实替换、记忆（n-gram 重叠、提取率）
course/       ``aigc course run / build``：执行整门课、生成离线网站
其余          ``plotting`` 中文作图与进度条、``console`` 中文表格在终端里对齐、``imbalance`` 类别不平衡、
              ``compress`` 剪枝 / 量化 / 蒸馏
============  =====================================================================================
"""

__version__ = "0.1.0"

# ---- core：运行环境与训练
from .core.runtime import (
    PROFILES,
    Timer,
    compile_problem,
    cpu_bf16_fast,
    describe,
    device,
    eval_mode,
    pick,
    profile,
    seed_everything,
)
from .core.training import (
    FitOptions,
    History,
    NonFiniteLossError,
    evaluate,
    fit,
    steps_per_epoch,
    warmup_cosine,
    warmup_linear,
)
from .core import fsdp, optim
from .core.optim import decay_param_groups, lr_range_test
from .core.checkpoint import CheckpointMismatchError, load_checkpoint, save_checkpoint

# ---- data：从文字到张量
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
    entity_spans,
    find_boilerplate,
    load_peoples_daily,
    load_reviews,
    peoples_daily_stats,
    raw_reviews,
    review_stats,
)
from .data.bpe import BPETokenizer, chars_per_token, train_bpe
from .data.files import DataFileError, decode_text, detect_encoding, load_labeled, load_texts, read_text
from .data.batching import BucketBatchSampler, EncodedDataset, make_loader, pad_batch, pad_collate
from .data.augment import augment_dataset, augment_tokens, random_deletion, random_swap, synonym_replacement
from .data.wordvectors import WordVectors, train_skipgram_fast

# ---- models：模型家族
from .models import (
    CRF,
    BiLSTMTagger,
    GloVe,
    GPTLanguageModel,
    KerasStyleLSTM,
    LSTMLanguageModel,
    RNNClassifier,
    Seq2SeqTransformer,
    SkipGram,
    TransformerClassifier,
    glove_step,
    skipgram_step,
)
from .models.lora import LoRAGPT, LoRALinear, add_lora, merge_lora

# ---- metrics：指标
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
    segmentation_prf,
    span_prf,
    token_accuracy,
    word_spans,
)

# ---- generation：解码
from .generation import beam_search, beam_search_batch, generate, next_token_probs

# ---- 训练技巧：不平衡、压缩；作图
from .imbalance import FocalLoss, apply_threshold, best_threshold, class_counts, class_weights, resampling_sampler
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
from .plotting import (
    chinese_font_name,
    plot_confusion_matrix,
    plot_embedding_map,
    plot_heatmap,
    progress,
    text_color_for,
    use_chinese_font,
)

# ---- tasks：第 10 章直接用到的拼音任务的数据与基线（其余任务的东西从 aigc_lib.tasks.<名字> 导入）
from .tasks.pinyin.data import char_accuracy, pinyin_pairs, seq2seq_collate, to_pinyin
from .tasks.pinyin.baselines import BigramHMM, MostFrequentChar
from .tasks.pinyin.word_bigram import WordBigram

# ---- scale：内存账单、缩放定律、算力预算（第 14 章）
from .scale import (
    MemoryBill,
    PowerLaw,
    chinchilla_tokens,
    extrapolation_table,
    fit_power_law,
    gpt_activation_bytes,
    measure_cuda_peak,
    measure_saved_activations,
    measure_training_state,
    memory_bill,
    training_days,
    training_flops,
)

# ---- safety：个人信息、水印、偏见、记忆（第 16 章）
from .safety.pii import Span, find_pii, is_valid_id_number, luhn_valid, mask_pii
from .safety.pii_testset import make_pii_testset, pii_scores
from .safety.watermark import Watermark, detect_watermark, detection_rate, replace_tokens
from .safety.bias import counterfactual_flips, swap_words, weat
from .safety.memorization import NgramIndex, extraction_rate, ngram_overlap

# ---- zoo：课程自带的参考模型
from .zoo import Pretrained, pretrained
