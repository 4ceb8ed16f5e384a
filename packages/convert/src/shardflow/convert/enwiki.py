"""enwiki: English Wikipedia as MLCommons' BERT benchmark prepares it (``results4/``) into MDS.

The input is the ``results4/`` folder: ``part-00000-of-00500`` .. ``part-00499-of-00500`` (train) and
``eval.txt`` (validation), one sentence a line, a blank line between articles. The splits go to the
``train/`` and ``val/`` sub-folders of ``--out``. Two formats, those of mosaicml-streaming's two EnWiki
converters:

- ``--format text`` (default): ``{text: str}``, one sample per non-blank line (stripped).
- ``--format mlm``: BERT pre-training samples (masked tokens and next-sentence pairs), the columns its
  ``StreamingEnWiki`` reads: ``input_ids``, ``input_mask``, ``segment_ids``, ``masked_lm_positions``,
  ``masked_lm_ids``, ``next_sentence_labels`` (int32 arrays as raw bytes) and ``masked_lm_weights``
  (float32 bytes). Needs ``--vocab-file`` (BERT's WordPiece ``vocab.txt``) and the ``tokenizers`` package
  (the ``[text]`` extra). Each input file is made into samples on its own, with a random generator seeded
  by ``--random-seed`` and the file's name (so the output does not depend on the partitions or workers):
  ``--dupe-factor`` passes over its articles, each sample a pair of sentence spans of up to
  ``--max-seq-length`` tokens (shorter with probability ``--short-seq-prob``), the second span the one that
  follows or, half the time, one from another article; ``--masked-lm-prob`` of its tokens (at most
  ``--max-predictions-per-seq``) are predicted: 80% replaced by ``[MASK]``, 10% by a random token, 10% kept.
  The file's samples are shuffled before they are written.

Each file goes whole to one partition, weighed by its size.
"""

from __future__ import annotations

import argparse
import io
import os
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from shardflow.convert import _cli
from shardflow.convert._compressed import open_input
from shardflow.convert._deps import require
from shardflow.convert._plan import Segment, Unit
from shardflow.convert._run import Converter, Options, Plan, Summary, convert_each
from shardflow.convert.errors import InputError

__all__ = ["EnWiki", "MLMSettings", "enwiki_to_mds", "enwiki_splits", "main", "TEXT_COLUMNS", "MLM_COLUMNS"]

TEXT_COLUMNS = {"text": "str"}
MLM_COLUMNS = {
    name: "bytes"
    for name in (
        "input_ids",
        "input_mask",
        "segment_ids",
        "masked_lm_positions",
        "masked_lm_ids",
        "masked_lm_weights",
        "next_sentence_labels",
    )
}
"""The columns of ``--format mlm``: int32 arrays as bytes (``masked_lm_weights``: float32)."""

FORMATS = ("text", "mlm")
_SPECIAL = ("[CLS]", "[SEP]", "[MASK]")


@dataclass(frozen=True)
class MLMSettings:
    """How ``--format mlm`` makes samples (the defaults are those of BERT's and mosaicml-streaming's
    scripts)."""

    vocab_file: str
    do_lower_case: bool = True
    max_seq_length: int = 512
    max_predictions_per_seq: int = 20
    masked_lm_prob: float = 0.15
    short_seq_prob: float = 0.1
    dupe_factor: int = 10
    random_seed: int = 12345


def enwiki_splits(root: str) -> dict[str, list[str]]:
    """``{'train': [part-* files, sorted], 'val': [eval.txt]}`` of a ``results4/`` folder (splits present).

    Raises:
        InputError: ``root`` is not a folder or holds neither.
    """
    if not os.path.isdir(root):
        raise InputError(
            f"enwiki: {root} is not a folder: give the results4/ folder (part-00000-of-00500 ...)"
        )
    names = sorted(os.listdir(root))
    found = {
        "train": [os.path.join(root, n) for n in names if n.startswith("part-") and "-of-" in n],
        "val": [os.path.join(root, n) for n in names if n == "eval.txt"],
    }
    found = {split: files for split, files in found.items() if files}
    if not found:
        raise InputError(f"enwiki: {root} holds no part-NNNNN-of-NNNNN files and no eval.txt")
    return found


@dataclass
class EnWiki(Converter):
    """Converts ``results4/``-style text files (one split) into ``--format text`` or ``mlm`` samples."""

    files: list[str]
    mlm: MLMSettings | None = None
    name = "enwiki"

    def __post_init__(self) -> None:
        self._tokenizer: Any = None  # built in the worker, on first use
        self._ids: dict[str, int] = {}
        self._vocab_size = 0
        self._lines = self._bytes = 0

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_tokenizer": None}

    def plan(self) -> Plan:
        missing = [path for path in self.files if not os.path.isfile(path)]
        if missing:
            raise InputError(f"enwiki: {missing[0]} does not exist")
        units = [Unit(path, os.path.getsize(path)) for path in self.files]
        if self.mlm is None:
            return Plan(units, dict(TEXT_COLUMNS))
        require("tokenizers", "text", "enwiki --format mlm")
        self._read_vocab()
        return Plan(units, dict(MLM_COLUMNS), inputs=[self.mlm.vocab_file])

    def config(self) -> dict[str, Any]:
        if self.mlm is None:
            return {"--format": "text"}
        settings = {f"--{key.replace('_', '-')}": value for key, value in vars(self.mlm).items()}
        return {**settings, "--vocab-file": os.path.abspath(self.mlm.vocab_file), "--format": "mlm"}

    def _read_vocab(self) -> None:
        """The special tokens' ids and the vocabulary's size, from ``vocab.txt`` (one token a line)."""
        assert self.mlm is not None
        try:
            with open(self.mlm.vocab_file, encoding="utf-8") as file:
                tokens = [line.rstrip("\r\n") for line in file]
        except OSError as err:
            raise InputError(f"enwiki: cannot read --vocab-file {self.mlm.vocab_file}: {err}") from None
        ids = {token: k for k, token in enumerate(tokens)}
        absent = [token for token in (*_SPECIAL, "[UNK]") if token not in ids]
        if absent:
            raise InputError(
                f"enwiki: --vocab-file {self.mlm.vocab_file} lacks {', '.join(absent)}: give a BERT vocab.txt"
            )
        self._ids = {token: ids[token] for token in _SPECIAL}
        self._vocab_size = len(tokens)

    def _lines_of(self, path: str) -> Iterator[str]:
        """The file's lines, stripped (blank ones as ``''``), counting lines and bytes for the summary."""
        self._lines = self._bytes = 0
        with io.TextIOWrapper(open_input(path, "enwiki"), encoding="utf-8") as file:
            try:
                for line in file:
                    self._lines += 1
                    self._bytes += len(line)
                    yield line.strip()
            except UnicodeDecodeError as err:
                raise InputError(
                    f"enwiki: {path}: not UTF-8 text near line {self._lines + 1}: {err}"
                ) from None

    def samples(
        self, segment: Segment, columns: dict[str, str], skipped: list[str]
    ) -> Iterator[dict[str, Any]]:
        path = segment.unit.name
        if self.mlm is None:
            for line in self._lines_of(path):
                if line:
                    yield {"text": line}
            return
        if self._tokenizer is None:
            self._tokenizer = _wordpiece(self.mlm)
            self._read_vocab()
        documents: list[list[list[int]]] = [[]]
        for line in self._lines_of(path):
            if not line:
                documents.append([])
                continue
            ids = self._tokenizer.encode(line, add_special_tokens=False).ids
            if ids:
                documents[-1].append(ids)
        documents = [document for document in documents if document]
        rng = random.Random(f"{self.mlm.random_seed}:{os.path.basename(path)}")
        made = [
            sample
            for _ in range(self.mlm.dupe_factor)
            for k in range(len(documents))
            for sample in _pairs(documents, k, rng, self.mlm, self._ids, self._vocab_size)
        ]
        rng.shuffle(made)
        yield from made

    def where(self, segment: Segment, produced: int) -> str:
        return f"{segment.unit.name} (sample {produced})"

    def tally(self, segment: Segment, produced: int) -> tuple[str, dict[str, int]]:
        return segment.unit.name, {"lines": self._lines, "characters": self._bytes, "samples": produced}


def _wordpiece(settings: MLMSettings) -> Any:
    """BERT's tokenizer (clean-up, accents and case as ``do_lower_case``, punctuation split, WordPiece)."""
    tokenizers = require("tokenizers", "text", "enwiki --format mlm")
    from tokenizers import models, normalizers, pre_tokenizers

    vocab = models.WordPiece.read_file(settings.vocab_file)
    tokenizer = tokenizers.Tokenizer(models.WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=200))
    tokenizer.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=settings.do_lower_case
    )
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    return tokenizer


def _pairs(
    documents: list[list[list[int]]],
    k: int,
    rng: random.Random,
    settings: MLMSettings,
    special: dict[str, int],
    vocab_size: int,
) -> Iterator[dict[str, bytes]]:
    """The samples of document ``k``: its sentences cut into spans of about a target length, each span
    split in two (``a`` and the rest, or ``a`` and a span of another document)."""
    document = documents[k]
    room = settings.max_seq_length - 3  # [CLS] a [SEP] b [SEP]
    target = rng.randint(2, room) if rng.random() < settings.short_seq_prob else room
    span: list[list[int]] = []
    length = 0
    i = 0
    while i < len(document):
        span.append(document[i])
        length += len(document[i])
        if i == len(document) - 1 or length >= target:
            cut = rng.randint(1, len(span) - 1) if len(span) > 1 else 1
            first = [token for sentence in span[:cut] for token in sentence]
            random_next = len(span) == 1 or rng.random() < 0.5
            if random_next:
                other = k
                for _ in range(10):
                    other = rng.randint(0, len(documents) - 1)
                    if other != k:
                        break
                source = documents[other]
                second: list[int] = []
                for sentence in source[rng.randint(0, len(source) - 1) :]:
                    second += sentence
                    if len(second) >= target - len(first):
                        break
                i -= len(span) - cut  # the sentences after the cut start the next span
            else:
                second = [token for sentence in span[cut:] for token in sentence]
            _trim(first, second, room, rng)
            yield _sample(first, second, random_next, rng, settings, special, vocab_size)
            span, length = [], 0
        i += 1


def _trim(first: list[int], second: list[int], room: int, rng: random.Random) -> None:
    """Drop tokens from the longer of the two (its front or its back, at random) until both fit ``room``."""
    while len(first) + len(second) > room:
        longer = first if len(first) > len(second) else second
        del longer[0 if rng.random() < 0.5 else -1]


def _sample(
    first: list[int],
    second: list[int],
    random_next: bool,
    rng: random.Random,
    settings: MLMSettings,
    special: dict[str, int],
    vocab_size: int,
) -> dict[str, bytes]:
    """One sample: ``[CLS] first [SEP] second [SEP]`` with tokens masked, padded to the fixed lengths."""
    tokens = [special["[CLS]"], *first, special["[SEP]"], *second, special["[SEP]"]]
    segments = [0] * (len(first) + 2) + [1] * (len(second) + 1)
    candidates = [p for p in range(len(tokens)) if p not in (0, len(first) + 1, len(tokens) - 1)]
    rng.shuffle(candidates)
    count = min(settings.max_predictions_per_seq, max(1, round(len(tokens) * settings.masked_lm_prob)))
    chosen = sorted(candidates[:count])
    labels = [tokens[p] for p in chosen]
    for p in chosen:
        if rng.random() < 0.8:
            tokens[p] = special["[MASK]"]
        elif rng.random() >= 0.5:
            tokens[p] = rng.randint(0, vocab_size - 1)
    pad = settings.max_seq_length - len(tokens)
    missing = settings.max_predictions_per_seq - len(chosen)
    return {
        "input_ids": _int32(tokens + [0] * pad),
        "input_mask": _int32([1] * len(tokens) + [0] * pad),
        "segment_ids": _int32(segments + [0] * pad),
        "masked_lm_positions": _int32(chosen + [0] * missing),
        "masked_lm_ids": _int32(labels + [0] * missing),
        "masked_lm_weights": np.array([1.0] * len(chosen) + [0.0] * missing, np.float32).tobytes(),
        "next_sentence_labels": _int32([1 if random_next else 0]),
    }


def _int32(values: list[int]) -> bytes:
    return np.array(values, np.int32).tobytes()


def _converters(root: str, mlm: MLMSettings | None) -> dict[str, Converter]:
    return {split: EnWiki(files, mlm) for split, files in enwiki_splits(root).items()}


def enwiki_to_mds(root: str, options: Options, *, mlm: MLMSettings | None = None) -> dict[str, Summary]:
    """Convert ``results4/`` at ``root`` into ``<options.out>/train`` and ``/val``: text samples, or BERT
    pre-training samples when ``mlm`` is given."""
    return convert_each(_converters(root, mlm), options)


def _parser() -> argparse.ArgumentParser:
    cli = _cli.parser("enwiki", __doc__ or "")
    cli.add_argument("root", help="the results4/ folder: part-00000-of-00500 ..., eval.txt")
    cli.add_argument("--format", choices=FORMATS, default="text", help="text samples or mlm (BERT) samples")
    mlm = cli.add_argument_group("--format mlm")
    defaults = MLMSettings("")
    mlm.add_argument("--vocab-file", help="BERT's WordPiece vocab.txt (required by --format mlm)")
    mlm.add_argument("--cased", action="store_true", help="keep case and accents (a cased vocabulary)")
    for option, kind in (
        ("max_seq_length", int),
        ("max_predictions_per_seq", int),
        ("masked_lm_prob", float),
        ("short_seq_prob", float),
        ("dupe_factor", int),
        ("random_seed", int),
    ):
        default = getattr(defaults, option)
        mlm.add_argument(
            f"--{option.replace('_', '-')}", type=kind, default=default, help=f"default {default}"
        )
    return cli


def _build(args: argparse.Namespace) -> dict[str, Converter]:
    if args.format == "text":
        return _converters(args.root, None)
    if not args.vocab_file:
        raise InputError("enwiki: --format mlm needs --vocab-file (BERT's WordPiece vocab.txt)")
    if args.max_seq_length < 8 or args.max_predictions_per_seq < 1 or args.dupe_factor < 1:
        raise InputError(
            "enwiki: --max-seq-length must be 8 or more, --max-predictions-per-seq and "
            "--dupe-factor 1 or more"
        )
    settings = MLMSettings(
        args.vocab_file,
        not args.cased,
        args.max_seq_length,
        args.max_predictions_per_seq,
        args.masked_lm_prob,
        args.short_seq_prob,
        args.dupe_factor,
        args.random_seed,
    )
    return _converters(args.root, settings)


def main(argv: Sequence[str] | None = None) -> int:
    """The command line: ``python -m shardflow.convert.enwiki RESULTS4 --out OUT [--format mlm ...]``."""
    return _cli.main(_parser(), _build, argv)


if __name__ == "__main__":
    raise SystemExit(main())
