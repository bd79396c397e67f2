r"""Export a trained run: a Hugging Face BERT directory, a model card, and the model bundle.

  python -m train.export --workdir=workdirs/default --out=exports/default
  python -m train.export --workdir=workdirs/default --out=exports/default --push_to_hub=me/minilm-multitask

--out receives:
  config.json, model.safetensors, vocab.txt, tokenizer_config.json
      the fine-tuned encoder, loadable by `transformers.BertModel.from_pretrained(out)`
      (and by `--config.checkpoint=out` for a new run); the task heads are not in it.
  README.md
      a model card: base checkpoint, method (preset and the fields that differ from
      its defaults), dev scores, data split.
  model/
      the whole multitask model (encoder and heads) as a bert_jax bundle:
      `bert_jax.load_model(out)`, `python -m train.predict --model=out`.

--workdir may also be a bundle directory. Everything is written to a temporary
directory beside --out and renamed at the end, so --out is either complete or
absent; an existing, non-empty --out is refused rather than overwritten.
--push_to_hub uploads --out with `huggingface_hub`; when that is not installed,
or HF_HUB_OFFLINE is set, the export stops before writing anything.
"""

from __future__ import annotations

import importlib
import json
import os
import pathlib
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from typing import Any

from absl import app, flags, logging

from train.config_changes import flatten as flatten_config

# Hub ids of the checkpoint names bert_jax resolves itself (bert_jax.checkpoint_files).
KNOWN_HUB_IDS = {"minilm-l6": "sentence-transformers/all-MiniLM-L6-v2"}
# Config fields that say where files were on the training machine, not how the model
# was trained: left out of the card (they would also publish local paths).
LOCATION_FIELDS = ("checkpoint", "compilation_cache_dir", "data.data_root", "data.tfds_dir", "data.cache_dir")
TASK_LINES = (("sst_accuracy", "SST-5 accuracy"), ("para_accuracy", "Quora paraphrase accuracy"),
              ("sts_pearson", "STS Pearson r"), ("overall_mean", "overall (mean of the three)"),
              ("overall_cs224n", "overall (CS224N: r -> (r+1)/2)"))


class ExportError(RuntimeError):
  """An export that cannot be written or pushed; the message says what to do."""


# ----------------------------------------------------------------------------- the model card


def _comparable(value: Any) -> Any:
  return json.loads(json.dumps(value, default=str))  # tuples -> lists, as results.json stores them


def config_changes(config: Mapping[str, Any]) -> tuple[str, list[tuple[str, Any, Any]]]:
  """(preset name, [(field, value, preset default)]) for the fields the run changed.

  Compares the recorded config with its preset's `get_config()`; a preset that
  is not in train/configs is compared with the default preset instead.
  """
  preset = str(config.get("name") or "default")
  try:
    module = importlib.import_module(f"train.configs.{preset}")
    base_name = preset
  except ImportError:
    module = importlib.import_module("train.configs.default")
    base_name = "default"
  defaults = flatten_config(_comparable(module.get_config().to_dict()))
  recorded = flatten_config(_comparable(dict(config)))
  # Fields the preset gained after the run are not in the recorded config: not a change the run made.
  changes = [(field, value, defaults.get(field, "(not in the preset)"))
             for field, value in sorted(recorded.items())
             if field not in LOCATION_FIELDS and value != defaults.get(field, "(not in the preset)")]
  return base_name, changes


def _base_checkpoint_name(base: str | None) -> tuple[str, str | None]:
  """(how the card names the base checkpoint, its hub id if it has one)."""
  if not base:
    return "unknown", None
  if base in KNOWN_HUB_IDS:
    return f"{KNOWN_HUB_IDS[base]} (bert_jax name {base!r})", KNOWN_HUB_IDS[base]
  if pathlib.Path(base).expanduser().is_dir() or base.startswith(("/", ".", "~")):
    return f"a local checkpoint directory named {pathlib.Path(base).name!r}", None
  return base, base


def model_card(metadata: Mapping[str, Any]) -> str:
  """README.md for the export, from a bundle's metadata."""
  training = metadata.get("training") or {}
  config = training.get("config") or {}
  base_text, base_hub_id = _base_checkpoint_name(metadata.get("base_checkpoint"))
  settings = metadata["model"]
  lines = ["---", "library_name: bert_jax", "tags: [bert, jax, flax, multitask, sentiment-analysis, "
           "paraphrase-detection, semantic-similarity]"]
  if base_hub_id:
    lines.append(f"base_model: {base_hub_id}")
  lines += ["---", "", f"# Multitask BERT: {training.get('preset') or 'bert_jax'}", "",
            f"A BERT encoder fine-tuned with bert_jax on three tasks at once: SST-5 sentiment, Quora "
            f"paraphrase detection and STS similarity (the Stanford CS224N multitask minBERT project).",
            "", f"- Base checkpoint: {base_text}",
            f"- Heads: paraphrase `{settings['paraphrase_head']}`, similarity `{settings['similarity_head']}`, "
            f"sentiment pooling `{settings['sentiment_pooling']}`, pair pooling `{settings['pair_pooling']}`"
            + (", paraphrase and similarity share their first layer" if settings.get("share_para_sts") else ""),
            f"- Max sequence length: {metadata['max_length']} tokens"]
  if (metadata.get("tokenizer") or {}).get("detokenize_ptb"):
    lines.append("- Trained on Penn Treebank tokens turned back into plain text (`-LRB-` -> `(`, `does n't` -> "
                 "`doesn't`). The bundle in `model/` does that to its input; the Hugging Face tokenizer files "
                 "here do not, so give them plain text.")
  lines.append("")
  lines += ["## Method", ""]
  if config:
    preset, changes = config_changes(config)
    lines.append(f"Preset `{preset}` (`train/configs/{preset}.py`), best checkpoint of stage "
                 f"`{training.get('best_stage') or 'main'}`.")
    if changes:
      lines += ["", "Fields that differ from the preset's defaults:", "", "| field | value | preset default |",
                "|---|---|---|"]
      lines += [f"| `{field}` | `{value}` | `{default}` |" for field, value, default in changes]
    else:
      lines += ["", "The preset's defaults, unchanged."]
  else:
    lines.append("The bundle does not record the training config.")
  scores = metadata.get("dev_scores") or {}
  lines += ["", "## Dev scores", ""]
  if scores:
    lines += ["| metric | score |", "|---|---|"]
    lines += [f"| {label} | {scores[key]:.4f} |" for key, label in TASK_LINES if key in scores]
  else:
    lines.append("Not recorded.")
  data = metadata.get("data") or {}
  lines += ["", "## Data", ""]
  if data.get("quora_split"):
    lines.append(f"Quora split: `{data['quora_split']}`" + (
        " (train and validation are a 90/10 split of the course's quora-dev.csv by a hash of the id; "
        "the official quora-train.csv was not used)" if data["quora_split"] == "dev_90_10" else ""))
  splits = data.get("splits") or {}
  if splits:
    lines += ["", "| task | split | examples | source |", "|---|---|---|---|"]
    for task, task_splits in splits.items():
      for split, info in task_splits.items():
        lines.append(f"| {task} | {split} | {info.get('examples')} | `{info.get('name')}` |")
  lines += ["", "## Use", "", "```python",
            "import bert_jax  # the whole multitask model, heads included (model/)",
            "model = bert_jax.load_model(\"<this directory>\")",
            "model.predict_sst([\"A quiet triumph.\"]); model.similarity([(\"A man sings.\", \"A man is singing.\")])",
            "", "import transformers  # the fine-tuned encoder alone", "encoder = transformers.BertModel.from_pretrained(\"<this directory>\")",
            "```", ""]
  return "\n".join(lines)


# ----------------------------------------------------------------------------- writing and pushing


def _hub_for_push(repo_id: str):
  """The huggingface_hub module, if a push can work at all; checked before anything is written."""
  from bert_jax import checkpoint_files  # pylint: disable=import-outside-toplevel
  try:
    import huggingface_hub  # pylint: disable=import-outside-toplevel
  except ImportError:
    raise ExportError(f"--push_to_hub={repo_id}: huggingface_hub is not installed (pip install "
                      "huggingface_hub); nothing was written. Export without --push_to_hub, then upload "
                      "the directory yourself.") from None
  if checkpoint_files.hub_offline():
    raise ExportError(f"--push_to_hub={repo_id}: HF_HUB_OFFLINE is set, so the hub cannot be reached; "
                      "nothing was written. Unset it when online, or export without --push_to_hub.")
  return huggingface_hub


def export_run(source: str | os.PathLike, out: str | os.PathLike) -> pathlib.Path:
  """Writes the export of `source` (workdir or bundle) to `out`, all or nothing."""
  from bert_jax import bundle as bundle_lib  # pylint: disable=import-outside-toplevel
  from bert_jax import checkpoints  # pylint: disable=import-outside-toplevel
  from train import trained_run  # pylint: disable=import-outside-toplevel
  out = pathlib.Path(out).expanduser()
  if out.exists() and (not out.is_dir() or any(out.iterdir())):
    raise ExportError(f"--out={out} already exists and is not empty; remove it or choose another directory")
  trained = trained_run.load_trained(source)
  out.parent.mkdir(parents=True, exist_ok=True)
  staging = pathlib.Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
  try:
    checkpoints.export_hf_checkpoint(trained.params["bert"], trained.model.config, trained.tokenizer.vocab_path,
                                     staging, lowercase=trained.tokenizer.lowercase)
    bundle_lib.save_bundle(trained, staging / bundle_lib.BUNDLE_SUBDIR)
    (staging / "README.md").write_text(model_card(trained.metadata), encoding="utf-8")
    os.chmod(staging, 0o755)  # mkdtemp and safetensors create owner-only entries; an export is for sharing
    for entry in staging.iterdir():
      if entry.is_file():
        os.chmod(entry, 0o644)
    if out.exists():
      out.rmdir()  # empty (checked above)
    os.replace(staging, out)
  finally:
    shutil.rmtree(staging, ignore_errors=True)
  return out


def push(out: pathlib.Path, repo_id: str, huggingface_hub) -> str:
  try:
    api = huggingface_hub.HfApi()
    api.create_repo(repo_id, exist_ok=True)
    commit = api.upload_folder(folder_path=str(out), repo_id=repo_id,
                               commit_message="bert_jax export: encoder, model card and multitask bundle")
  except Exception as e:  # pylint: disable=broad-except  (HTTP, auth and connection errors alike)
    raise ExportError(f"could not push {out} to the hub repo {repo_id!r} ({type(e).__name__}: "
                      f"{str(e).splitlines()[0] if str(e) else ''}). The export in {out} is complete; "
                      f"upload it later with `huggingface-cli upload {repo_id} {out}`.") from e
  return getattr(commit, "commit_url", str(commit))


def define_flags() -> None:
  """The CLI's flags, defined only when it runs (tests import this module beside others' flags)."""
  flags.DEFINE_string("workdir", None, "A training workdir (or a model bundle directory).")
  flags.DEFINE_string("out", None, "Directory to create with the export.")
  flags.DEFINE_string("push_to_hub", None, "Upload the export to this Hugging Face repo id.")


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  args = flags.FLAGS
  if not args.workdir or not args.out:
    raise app.UsageError("--workdir and --out are required")
  if not args["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
  hub = _hub_for_push(args.push_to_hub) if args.push_to_hub else None
  out = export_run(args.workdir, args.out)
  print(f"exported {args.workdir} to {out}: Hugging Face encoder, README.md, and the bundle in {out / 'model'}")
  if hub is not None:
    print(f"pushed to {push(out, args.push_to_hub, hub)}")


def run() -> None:
  """Console-script entry point (`bert-jax-export`)."""
  from train import script_help  # pylint: disable=import-outside-toplevel
  script_help.run_script(__name__, define_flags, main)


if __name__ == "__main__":
  run()
