"""Base preset: every field the trainer reads, at the engine's plain settings.

  python -m train.main --config=train/configs/base.py --workdir=workdirs/base

Round-robin multitask training of the cosine pair heads and a mean-pooled SST
classifier, with one learning rate, the raw weights evaluated and each task once
per epoch. The method presets in this folder (the reports' rows, the conflict
methods) start from `get_config()` here and change only what their method
changes, so that they compare with one another and with this preset. The
default preset (default.py) is this one plus the SST recipe that the quality
study kept. Override any field from the command line, e.g.
`--config.optim.learning_rate=3e-5 --config.num_epochs=3`.
"""

import ml_collections

from train.conflicts import registry as conflicts_registry


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.name = "base"
  config.seed = 0
  config.checkpoint = "minilm-l6"  # or a local HF directory, or a hub id such as bert-base-uncased
  config.dtype = "float32"  # "bfloat16" on GPU/TPU: compute dtype; params stay float32
  # A workdir or model bundle (<workdir>/model) of a trained run: start from its encoder AND heads
  # instead of `checkpoint`'s encoder and fresh heads. config.model must match its architecture.
  config.init_from = ""

  config.data = ml_collections.ConfigDict()
  config.data.data_root = ""  # "" = $BERT_JAX_DATA, else ../shared/data beside the repo, else download
  config.data.tfds_dir = ""  # "" = the TFDS default (~/tensorflow_datasets)
  config.data.cache_dir = ""  # "" = tokenized-data cache under the TFDS dir
  config.data.max_length = 128
  config.data.num_buckets = 4  # length buckets, when not packing
  # Pack several sentences per row (data_prep/packing.py): ~91% of positions are real tokens,
  # against 67-76% with length buckets. Rows are the smallest pack length that holds the
  # batch's longest sentence; their number is rounded up to a multiple and to 3 significant
  # bits (13 -> 14, 50 -> 52), so a task compiles a handful of shapes.
  config.data.packing = True
  config.data.pack_lengths = (64, 128)
  config.data.pack_row_multiple = 2
  config.data.quora_split = "dev_90_10"  # quora-train.csv is not shipped here; see data_prep
  config.data.extra_sst = ""  # "", "cfimdb_polar" or "cfimdb_not_polar"
  config.data.extra_sts = ""  # "" or "sick"
  # Train on this fraction of the Quora pairs per epoch (0 = no paraphrase training). Quora
  # dwarfs the other tasks (the official train split has ~141k pairs, SST 8.5k, STS 6k);
  # one report trained on less of it so that it would not crowd out SST and STS.
  config.data.para_fraction = 1.0
  # The same for SST and STS; above 1 a task repeats within an epoch (2 = twice its examples),
  # and takes that much more of each round-robin step under proportions "size".
  config.data.sst_fraction = 1.0
  config.data.sts_fraction = 1.0
  # Turn the CSVs' Penn Treebank tokens back into plain text before WordPiece ("-LRB-" -> "(",
  # "does n't" -> "doesn't"; bert_jax/tokenizer.py). SST is PTB-tokenized, Quora and STS are not;
  # the model bundle keeps the setting, so predictions on plain text read it the same way.
  config.data.detokenize_ptb = False
  config.data.skip_bad_rows = True  # quora-dev.csv has 2 malformed rows; they are counted and reported

  config.model = ml_collections.ConfigDict()
  config.model.sentiment_pooling = "mean"  # all-MiniLM-L6-v2 was trained with mean pooling; its pooler was not
  config.model.pair_pooling = "mean"
  # Both pair tasks read cos(u, v) of mean-pooled embeddings: the space all-MiniLM-L6-v2 was
  # trained in (zero-shot 0.838 STS r, ~0.78 Para accuracy), so fine-tuning starts from there.
  # A diff head learned from scratch reached only 0.781 Para after 2 epochs.
  config.model.paraphrase_head = "cosine"
  config.model.similarity_head = "cosine"
  config.model.share_para_sts = False
  config.model.head_dropout = 0.1
  # Multi-sample dropout: each head runs this many times per training batch, each with its own
  # dropout mask, and the loss is their mean (bert_jax/multitask.py). 1 = plain dropout.
  config.model.head_dropout_samples = 1
  config.model.head_hidden_dim = 0

  # Task order (data_prep/sampler.py): "round_robin" (every step has a batch of each task) or
  # "sequential" (an epoch of SST, then of Para, then of STS). Not `optim.schedule`, the learning rate's.
  config.task_schedule = "round_robin"
  config.proportions = "size"  # round_robin only: "size", "balanced" or "annealed"
  config.batch_size = 64  # examples per step, over all tasks (split by `proportions`)
  config.eval_batch_size = 128
  config.num_epochs = 2
  config.max_steps = -1  # > 0 stops early: smoke tests
  config.loss_weights = ml_collections.ConfigDict({"sst": 1.0, "para": 1.0, "sts": 1.0})
  config.similarity_loss = "mse"  # or "l1"
  # R-Drop (bert_jax/losses.py): per task, the weight of the disagreement between two dropout
  # passes of each batch; > 0 doubles that task's forward and backward. 0 = one pass.
  config.rdrop_alpha = ml_collections.ConfigDict({"sst": 0.0, "para": 0.0, "sts": 0.0})
  # SMART (bert_jax/smart.py): per task, the weight of a term that keeps the outputs still under a
  # small adversarial perturbation of the encoder's input; > 0 costs that task about two more forward
  # and backward passes. 0 = off. Not together with R-Drop on the same task.
  config.smart = ml_collections.ConfigDict()
  config.smart.weight = ml_collections.ConfigDict({"sst": 0.0, "para": 0.0, "sts": 0.0})
  config.smart.noise_std = 1e-5  # the initial perturbation's standard deviation
  config.smart.step_size = 1e-3  # of each ascent step, before the step is scaled to max-abs 1 per token
  config.smart.epsilon = 1e-6
  config.smart.num_steps = 1
  # The dev score that picks the best checkpoint (of a stage, and between the main and the frozen
  # stage): "overall_mean" (mean of the three), "overall_cs224n" (STS r mapped to (r+1)/2 first),
  # or one task's "sst_accuracy", "para_accuracy", "sts_pearson".
  config.best_metric = "overall_mean"

  config.optim = ml_collections.ConfigDict()
  config.optim.learning_rate = 5e-5
  config.optim.schedule = "warmup_linear"  # "warmup_cosine", "constant"
  config.optim.warmup_steps = -1  # < 0: use warmup_fraction of all steps
  config.optim.warmup_fraction = 0.1
  config.optim.end_learning_rate_fraction = 0.0
  config.optim.b1 = 0.9
  config.optim.b2 = 0.999
  config.optim.eps = 1e-8
  config.optim.weight_decay = 0.01
  config.optim.clip_norm = 1.0
  # Layer-wise learning-rate decay: encoder layer i of L trains at layer_decay ** (L - i) times the
  # rate, the embeddings one step lower (train/optim.py); 1.0 = one rate for all. The task heads,
  # trained from scratch, train at head_learning_rate_multiplier times the rate.
  config.optim.layer_decay = 1.0
  config.optim.head_learning_rate_multiplier = 1.0
  # > 0: evaluate, pick the best checkpoint and export with a moving average of the weights
  # (train/weight_averaging.py), e.g. 0.999; training itself goes on with the raw weights.
  config.optim.ema_decay = 0.0
  config.optim.freeze = ()  # regexes on param paths, e.g. ("^bert/",) or ("word_embeddings",)

  config.pcgrad = ml_collections.ConfigDict()
  config.pcgrad.enabled = False
  config.pcgrad.tasks = ()  # () = project every task; ("sts",) = surgery on STS only
  config.pcgrad.reduction = "sum"

  # How the task gradients are combined (train/conflicts/): "sum" (the plain sum, this preset),
  # "pcgrad" (options in config.pcgrad; pcgrad.enabled=True means the same), "gradvac", "mgda",
  # "cagrad", "imtl_g", "nash_mtl", "aligned_mtl", "upgrad", "dualproj", or the loss weightings
  # "uncertainty", "dwa", "famo". Options per method, at their defaults, in
  # config.conflicts.<method>, e.g. --config.conflicts.method=cagrad --config.conflicts.cagrad.c=0.5.
  config.conflicts = conflicts_registry.default_config()

  # After the main stage: its best checkpoint, the encoder frozen, the heads trained one task per
  # epoch ("sequential", plain summed gradients) by an optimizer of its own. frozen_stage.optim starts
  # as a copy of config.optim above; a later change to config.optim (a preset's or the command line's)
  # does not reach it: set --config.frozen_stage.optim.<field> for that.
  config.frozen_stage = ml_collections.ConfigDict()
  config.frozen_stage.enabled = False
  config.frozen_stage.epochs_per_task = 1
  config.frozen_stage.optim = ml_collections.ConfigDict(config.optim.to_dict())
  config.frozen_stage.optim.learning_rate = 1e-6
  config.frozen_stage.optim.schedule = "constant"
  config.frozen_stage.optim.warmup_steps = 0  # a flat 1e-6 from the first step
  config.frozen_stage.optim.freeze = ("^bert/",)  # the encoder: what makes the stage "frozen"

  config.parallel = ml_collections.ConfigDict()
  config.parallel.mode = "jit"  # or "pmap"
  config.parallel.num_devices = 0  # 0 = every local device

  config.log_every_steps = 20
  # Every N-th step, log the pairwise cosines and the norms of the task gradients (before they are
  # combined) under "gradients" in metrics.jsonl and TensorBoard; 0 = off. Costs one Gram matrix
  # of the task gradients on those steps only (train/gradient_stats.py).
  config.gradient_stats_every_steps = 0
  config.checkpoint_every_steps = 200
  # Evaluate on dev (and save a best-checkpoint candidate) after every N-th epoch of a stage, and
  # always after its last step. Only evaluated steps can become the best checkpoint.
  config.eval_every_epochs = 1
  config.compilation_cache_dir = ""  # "" = ~/.cache/bert_jax/jax_compilation_cache
  # A resume refuses a config that differs from its checkpoint's (train/config_changes.py);
  # dotted fields named here may differ on purpose, e.g. ("optim.learning_rate",).
  config.resume_with_changes = ()
  return config
