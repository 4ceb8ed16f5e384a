"""Small inputs in the published layouts of the Pile, MLCommons' EnWiki (``results4/``) and WebVid (its
CSV and downloaded videos), with the samples a conversion must give.

Shared by tests/convert/test_{pile,enwiki,webvid}.py and tests/compat/test_reference_starter_text.py (which
put this folder on ``sys.path``).
"""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path
from typing import Any

import zstandard

PILE_SETS = ["Pile-CC", "PubMed Central", "Books3", "Github", "Wikipedia (en)"]
WORDS = (
    "the of and to in a is was for on as with by he that at from his it an were are which this also be has "
    "or had first one their its new after but who not they have her she two been other when there all during "
    "into school time may years more most only over city some world would where later up such used many can "
    "state about national out known university united then made river war film"
).split()
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def _sentence(rng: random.Random, low: int = 4, high: int = 18) -> str:
    words = [rng.choice(WORDS) for _ in range(rng.randint(low, high))]
    return " ".join(words).capitalize() + "."


def make_pile(
    root: Path, train_files: int, lines: int, compressed: bool = True
) -> dict[str, list[dict[str, Any]]]:
    """``train/00.jsonl.zst`` .. , ``val.jsonl.zst``, ``test.jsonl.zst`` (``.jsonl`` when not ``compressed``);
    returns each split's samples ``{text, pile_set_name}`` in order."""
    rng = random.Random(7)
    suffix = ".jsonl.zst" if compressed else ".jsonl"
    files = {f"train/{k:02d}{suffix}": "train" for k in range(train_files)}
    files.update({f"val{suffix}": "val", f"test{suffix}": "test"})
    expected: dict[str, list[dict[str, Any]]] = {"train": [], "val": [], "test": []}
    for name, split in files.items():
        count = lines if split == "train" else max(1, lines // 4)
        records = []
        for _ in range(count):
            text = "\n\n".join(_sentence(rng) * rng.randint(1, 6) for _ in range(rng.randint(1, 4)))
            records.append({"text": text, "meta": {"pile_set_name": rng.choice(PILE_SETS)}})
        data = "".join(json.dumps(record) + "\n" for record in records).encode()
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(zstandard.ZstdCompressor(level=3).compress(data) if compressed else data)
        expected[split] += [{"text": r["text"], "pile_set_name": r["meta"]["pile_set_name"]} for r in records]
    return expected


def make_results4(root: Path, parts: int, documents: int) -> dict[str, list[str]]:
    """``part-0000k-of-0000<parts>`` and ``eval.txt``: one sentence a line, a blank line between documents;
    returns each split's non-blank lines (stripped), in order (the ``--format text`` samples)."""
    rng = random.Random(11)
    root.mkdir(parents=True, exist_ok=True)
    names = {f"part-{k:05d}-of-{parts:05d}": "train" for k in range(parts)}
    names["eval.txt"] = "val"
    expected: dict[str, list[str]] = {"train": [], "val": []}
    for name, split in names.items():
        text = []
        for _ in range(documents if split == "train" else max(2, documents // 3)):
            sentences = [_sentence(rng) for _ in range(rng.randint(1, 9))]
            text += [f"  {s} " if rng.random() < 0.1 else s for s in sentences] + [""]
            expected[split] += sentences
        (root / name).write_text("\n".join(text) + "\n", encoding="utf-8")
    return expected


def make_vocab(path: Path) -> Path:
    """A BERT ``vocab.txt``: the special tokens, the words of the inputs, their word pieces, punctuation."""
    pieces = sorted({w[:3] for w in WORDS} | {"##" + w[3:] for w in WORDS if len(w) > 3})
    tokens = SPECIAL + sorted(set(WORDS)) + pieces + list(".,;:!?'\"()-")
    path.write_text("\n".join(dict.fromkeys(tokens)) + "\n", encoding="utf-8")
    return path


def make_webvid(
    root: Path, rows: int, missing: set[int], page_idx: bool = True
) -> tuple[Path, Path, list[dict[str, Any]]]:
    """A WebVid CSV (10M-style with ``page_idx``, else 2M-style) and ``videos/<page_dir>/<videoid>.mp4``
    (small random bytes) for every row but ``missing``; returns (csv, videos, the samples with the video's
    bytes under ``content`` and its relative path under ``content_path``)."""
    rng = random.Random(5)
    videos = root / "videos"
    header = ["videoid", "contentUrl", "duration", "page_idx", "page_dir", "name"]
    if not page_idx:
        header.remove("page_idx")
    expected = []
    lines = []
    for k in range(rows):
        videoid = str(1_000_000 + 37 * k)
        page = k // 8
        page_dir = f"{page * 50 + 1:06d}_{page * 50 + 50:06d}"
        seconds = rng.randint(3, 4000)
        record = {
            "videoid": videoid,
            "contentUrl": f"https://ak.picdn.net/shutterstock/videos/{videoid}/preview/stock-footage-{k}.mp4",
            "duration": f"PT{seconds // 3600:02d}H{seconds // 60 % 60:02d}M{seconds % 60:02d}S",
            "page_idx": str(page),
            "page_dir": page_dir,
            "name": f'{_sentence(rng, 3, 9)[:-1]}, "quoted", {k}',
        }
        lines.append([record[column] for column in header])
        if k in missing:
            continue
        content = b"\x00\x00\x00\x18ftypmp42" + rng.randbytes(rng.randint(2_000, 12_000))
        path = videos / page_dir / f"{videoid}.mp4"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        sample = {name: record[name] for name in header if name != "duration"}
        sample.update(duration=seconds, content=content, content_path=f"{page_dir}/{videoid}.mp4")
        expected.append(sample)
    path = root / "results_10M_val.csv"
    with path.open("w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(header)
        writer.writerows(lines)
    return path, videos, expected


def make_tokenizer(folder: Path) -> Path:
    """A small word-level Hugging Face tokenizer of the inputs' words, saved to ``folder`` (what
    ``AutoTokenizer.from_pretrained(folder)`` loads, offline); it has no pad token, as GPT-2's."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {token: k for k, token in enumerate(["<unk>", "<eos>", *sorted(set(WORDS)), *".,"])}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="<unk>", eos_token="<eos>")
    fast.save_pretrained(str(folder))
    config = folder / "tokenizer_config.json"  # a class name that transformers 4 and 5 both load
    config.write_text(
        json.dumps({**json.loads(config.read_text()), "tokenizer_class": "PreTrainedTokenizerFast"})
    )
    return folder
