"""EnWiki, the Pile and WebVid datasets cross over between the libraries, both ways.

mosaicml-streaming 0.13 runs in its own venv (see conftest.py). Its typed datasets (``StreamingEnWiki``,
``StreamingPile``, ``StreamingInsideWebVid``, ``StreamingOutsideGIWebVid``) read what
``shardflow.convert.<name>`` wrote and yield what shardflow's classes of the same names yield; and its
converters' output is read by shardflow's: its Pile converter and EnWiki text converter run on the same
published layout, its WebVid script turns shardflow's inside dataset into an outside one. Its EnWiki BERT
converter needs TensorFlow 1's API (absent), so its columns are written here with its ``MDSWriter``, packed
as that converter packs them.
"""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

from shardflow.dataset import StreamingDataset
from shardflow.dataset.multimodal import StreamingInsideWebVid, StreamingOutsideGIWebVid
from shardflow.dataset.text import StreamingEnWiki, StreamingPile

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "convert"))
from _text_inputs import make_pile, make_results4, make_tokenizer, make_vocab, make_webvid  # noqa: E402

_READ = r"""
import json, pickle, sys, warnings
warnings.simplefilter("ignore")
import streaming
from streaming.multimodal import StreamingInsideWebVid, StreamingOutsideGIWebVid
from streaming.text import StreamingEnWiki, StreamingPile
classes = {"StreamingDataset": streaming.StreamingDataset, "StreamingEnWiki": StreamingEnWiki,
           "StreamingPile": StreamingPile, "StreamingInsideWebVid": StreamingInsideWebVid,
           "StreamingOutsideGIWebVid": StreamingOutsideGIWebVid}
read = []
for name, kwargs in json.loads(sys.argv[1]):
    dataset = classes[name](**kwargs)
    read.append([dict(dataset[i]) for i in range(dataset.num_samples)])
with open(sys.argv[2], "wb") as out:
    pickle.dump(read, out)
"""

_WRITE_MLM = r"""
import pickle, sys
import numpy as np
from streaming import MDSWriter
columns = {name: "bytes" for name in ("input_ids", "input_mask", "segment_ids", "masked_lm_positions",
                                      "masked_lm_ids", "masked_lm_weights", "next_sentence_labels")}
with open(sys.argv[1], "rb") as file:
    instances = pickle.load(file)
i32 = lambda values: np.array(values, np.int64).astype(np.int32).tobytes()
with MDSWriter(out=sys.argv[2], columns=columns, compression="zstd:7", hashes=["sha1"]) as writer:
    for tokens, segments, positions, labels, random_next, seq, preds in instances:
        pad, missing = seq - len(tokens), preds - len(positions)
        writer.write({
            "input_ids": i32(tokens + [0] * pad), "input_mask": i32([1] * len(tokens) + [0] * pad),
            "segment_ids": i32(segments + [0] * pad), "masked_lm_positions": i32(positions + [0] * missing),
            "masked_lm_ids": i32(labels + [0] * missing),
            "masked_lm_weights": np.array([1.0] * len(positions) + [0.0] * missing, np.float32).tobytes(),
            "next_sentence_labels": i32([1 if random_next else 0]),
        })
"""


def _run(reference_python: Path, *args: Any) -> None:
    result = subprocess.run(
        [str(reference_python), *map(str, args)], capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-4000:]


def _reference_reads(
    reference_python: Path, tmp_path: Path, *jobs: tuple[str, dict[str, Any]]
) -> list[list[Any]]:
    """The samples of each ``(class name, arguments)`` read by the reference's class of that name."""
    out = tmp_path / "read.pkl"
    _run(reference_python, "-c", _READ, json.dumps(jobs), out)
    with out.open("rb") as file:
        return pickle.load(file)  # noqa: S301  (written just now by the test)


def _convert(*args: Any) -> None:
    result = subprocess.run(
        [sys.executable, "-m", *map(str, args)], capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-4000:]


def _ours(cls: type, **kwargs: Any) -> list[Any]:
    dataset = cls(**kwargs)
    return [dataset[i] for i in range(dataset.num_samples)]


def _same_arrays(got: list[dict[str, Any]], want: list[dict[str, Any]]) -> None:
    assert len(got) == len(want)
    for mine, theirs in zip(got, want, strict=True):
        assert mine.keys() == theirs.keys()
        for key, value in theirs.items():
            assert mine[key].dtype == value.dtype and np.array_equal(mine[key], value), key


def test_pile_both_ways(reference_python: Path, tmp_path: Path) -> None:
    expected = make_pile(tmp_path / "pile", train_files=3, lines=30)
    make_pile(tmp_path / "plain", train_files=3, lines=30, compressed=False)  # the reference reads .jsonl
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    _convert("shardflow.convert.pile", tmp_path / "pile", "--out", ours, "--workers", "2")
    _run(
        reference_python,
        "-m",
        "streaming.text.convert.pile",
        "--in_root",
        tmp_path / "plain",
        "--out_root",
        theirs,
    )
    tokens = {"tokenizer_name": str(make_tokenizer(tmp_path / "tokenizer")), "max_seq_len": 16}
    splits = ("train", "val", "test")
    *their_reads, tokenized = _reference_reads(
        reference_python,
        tmp_path,
        *(("StreamingDataset", {"local": str(ours), "split": split}) for split in splits),
        ("StreamingPile", {"local": str(ours), "split": "val", "group_method": "truncate", **tokens}),
    )
    for split, their_read in zip(splits, their_reads, strict=True):
        assert their_read == expected[split], split
        assert _ours(StreamingPile, local=str(theirs), split=split) == expected[split], split
    mine = _ours(StreamingPile, local=str(theirs), split="val", **tokens)
    assert [(m["input_ids"], m["attention_mask"]) for m in mine] == [
        (t["input_ids"], t["attention_mask"]) for t in tokenized
    ]


def test_enwiki_text_both_ways(reference_python: Path, tmp_path: Path) -> None:
    expected = make_results4(tmp_path / "results4", parts=500, documents=1)  # the reference reads all 500
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    _convert("shardflow.convert.enwiki", tmp_path / "results4", "--out", ours, "--workers", "2")
    _run(
        reference_python,
        "-m",
        "streaming.text.convert.enwiki_text",
        "--in_root",
        tmp_path / "results4",
        "--out_root",
        theirs,
        "--progress_bar",
        "0",
    )
    splits = ("train", "val")
    their_reads = _reference_reads(
        reference_python, tmp_path, *(("StreamingDataset", {"local": str(ours), "split": s}) for s in splits)
    )
    for split, their_read in zip(splits, their_reads, strict=True):
        mine = _ours(StreamingDataset, local=str(theirs), split=split)
        assert [s["text"] for s in mine] == expected[split], split
        assert their_read == mine, split


def _bert_instances(count: int, seq: int, preds: int) -> list[tuple[Any, ...]]:
    """Masked sentence pairs as the reference's BERT converter holds them before packing them."""
    rng = np.random.default_rng(3)
    instances = []
    for _ in range(count):
        first, second = (rng.integers(5, 150, rng.integers(1, 15)).tolist() for _ in range(2))
        tokens = [2, *first, 3, *second, 3]
        inner = np.arange(1, len(tokens) - 1)
        positions = sorted(rng.choice(inner, min(preds - 1, len(inner)), replace=False).tolist())
        labels = [tokens[p] for p in positions]
        for p in positions:
            tokens[p] = 4
        segments = [0] * (len(first) + 2) + [1] * (len(second) + 1)
        instances.append((tokens, segments, positions, labels, bool(rng.integers(2)), seq, preds))
    return instances


def test_enwiki_mlm_both_ways(reference_python: Path, tmp_path: Path) -> None:
    make_results4(tmp_path / "results4", parts=2, documents=10)
    vocab = make_vocab(tmp_path / "vocab.txt")
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    _convert(
        "shardflow.convert.enwiki",
        tmp_path / "results4",
        "--out",
        ours,
        "--format",
        "mlm",
        "--vocab-file",
        vocab,
        "--max-seq-length",
        "40",
        "--max-predictions-per-seq",
        "5",
        "--dupe-factor",
        "1",
        "--workers",
        "2",
    )
    instances = _bert_instances(25, 40, 5)
    source = tmp_path / "instances.pkl"
    source.write_bytes(pickle.dumps(instances))
    _run(reference_python, "-c", _WRITE_MLM, source, theirs)
    train, val, their_set = _reference_reads(
        reference_python,
        tmp_path,
        ("StreamingEnWiki", {"local": str(ours), "split": "train"}),
        ("StreamingEnWiki", {"local": str(ours), "split": "val"}),
        ("StreamingEnWiki", {"local": str(theirs)}),
    )
    _same_arrays(_ours(StreamingEnWiki, local=str(ours), split="train"), train)
    _same_arrays(_ours(StreamingEnWiki, local=str(ours), split="val"), val)
    mine = _ours(StreamingEnWiki, local=str(theirs))
    _same_arrays(mine, their_set)
    assert [m["input_ids"][: len(i[0])].tolist() for m, i in zip(mine, instances, strict=True)] == [
        i[0] for i in instances
    ]


def test_webvid_both_ways(reference_python: Path, tmp_path: Path) -> None:
    csv_path, videos, expected = make_webvid(tmp_path / "webvid", rows=20, missing={4})
    inside, outside = tmp_path / "inside", tmp_path / "outside"
    _convert("shardflow.convert.webvid", csv_path, "--videos", videos, "--out", inside, "--workers", "2")
    _convert(
        "shardflow.convert.webvid", csv_path, "--videos", videos, "--out", outside, "--variant", "outside"
    )
    theirs, their_videos = tmp_path / "theirs", tmp_path / "their-videos"
    _run(
        reference_python,
        "-m",
        "streaming.multimodal.convert.webvid.extract_webvid_videos",
        "--in",
        inside,
        "--out_mds",
        theirs,
        "--out_mp4",
        their_videos,
    )
    outside_args = {
        "local": str(outside),
        "extra_local": str(tmp_path / "their-cache"),
        "extra_remote": str(videos),
    }
    their_inside, their_outside = _reference_reads(
        reference_python,
        tmp_path,
        ("StreamingInsideWebVid", {"local": str(inside)}),
        ("StreamingOutsideGIWebVid", outside_args),
    )
    want_inside = [{k: v for k, v in s.items() if k != "content_path"} for s in expected]
    assert their_inside == want_inside and their_outside == expected
    assert _ours(StreamingInsideWebVid, local=str(inside)) == want_inside
    mine = _ours(
        StreamingOutsideGIWebVid,
        local=str(theirs),
        extra_local=str(tmp_path / "cache"),
        extra_remote=str(their_videos),
    )
    assert [{k: v for k, v in s.items() if k != "content_path"} for s in mine] == want_inside
    assert [s["content_path"] for s in mine] == [f"000/{k:03d}.mp4" for k in range(len(expected))]
