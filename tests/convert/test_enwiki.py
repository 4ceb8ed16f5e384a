"""shardflow.convert.enwiki: MLCommons' ``results4/`` (``part-NNNNN-of-NNNNN``, ``eval.txt``) into ``train/``
and ``val/``: text samples, or BERT pre-training samples read by ``StreamingEnWiki``; in parallel, the same
for any partitions and workers, resumable after a kill -9."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))  # the inputs' builders

from _text_inputs import make_results4, make_vocab  # noqa: E402
from _vision_inputs import kill_midway  # noqa: E402

from shardflow.dataset import StreamingDataset  # noqa: E402
from shardflow.dataset.text import StreamingEnWiki  # noqa: E402

MLM = ["--format", "mlm", "--max-seq-length", "48", "--max-predictions-per-seq", "6", "--dupe-factor", "2"]


def _texts(out: Path, split: str) -> list[str]:
    dataset = StreamingDataset(local=str(out), split=split)
    return [dataset[i]["text"] for i in range(dataset.num_samples)]


def test_text_format_one_sample_per_line(tmp_path: Path, cli) -> None:
    expected = make_results4(tmp_path / "results4", parts=6, documents=30)
    out = tmp_path / "out"
    result = cli("enwiki", tmp_path / "results4", "--out", out, "--workers", "2", "--partitions", "3")
    assert result.returncode == 0, result.stderr
    assert len(list((out / "train").glob("part.*"))) == 3
    assert _texts(out, "train") == expected["train"] and _texts(out, "val") == expected["val"]


def _documents(root: Path, vocab: Path) -> list[list[int]]:
    """Each document's tokens (its sentences' WordPieces, one after the other), of every input file."""
    from tokenizers import BertWordPieceTokenizer

    tokenizer = BertWordPieceTokenizer(str(vocab), lowercase=True)
    documents: list[list[int]] = []
    for path in sorted(root.iterdir()):
        for block in path.read_text().split("\n\n"):
            lines = [line for line in block.splitlines() if line.strip()]
            if lines:
                documents.append(
                    [t for line in lines for t in tokenizer.encode(line, add_special_tokens=False).ids]
                )
    return documents


def _where(documents: list[list[int]], run: list[int]) -> set[tuple[int, int]]:
    """Every (document, token offset) where ``run`` occurs."""
    return {
        (k, j)
        for k, document in enumerate(documents)
        for j in range(len(document) - len(run) + 1)
        if document[j : j + len(run)] == run
    }


def test_mlm_samples_are_masked_sentence_pairs_of_the_input(tmp_path: Path, cli) -> None:
    make_results4(tmp_path / "results4", parts=4, documents=25)
    vocab = make_vocab(tmp_path / "vocab.txt")
    out = tmp_path / "out"
    result = cli("enwiki", tmp_path / "results4", "--out", out, "--vocab-file", vocab, *MLM, "--workers", "2")
    assert result.returncode == 0, result.stderr
    ids = {token: k for k, token in enumerate(vocab.read_text().splitlines())}
    cls, sep, mask = ids["[CLS]"], ids["[SEP]"], ids["[MASK]"]
    documents = _documents(tmp_path / "results4", vocab)
    raw = StreamingDataset(local=str(out), split="train")
    typed = StreamingEnWiki(local=str(out), split="train")
    assert typed.num_samples > 100
    replaced = kept = 0
    labels_seen = set()
    for i in range(typed.num_samples):
        stored = {
            key: np.frombuffer(value, np.float32 if key == "masked_lm_weights" else np.int32)
            for key, value in raw[i].items()
        }
        sample = typed[i]
        assert set(sample) == {"input_ids", "token_type_ids", "attention_mask", "labels"}
        tokens, segments = sample["input_ids"], sample["token_type_ids"]
        assert tokens.dtype == np.int32 and sample["labels"].dtype == np.int64 and len(tokens) == 48
        length = int(sample["attention_mask"].sum())
        assert list(sample["attention_mask"]) == [1] * length + [0] * (48 - length)
        first_sep = int((segments[:length] == 0).sum()) - 1  # [CLS] first [SEP] are segment 0
        assert list(segments[:length]) == [0] * (first_sep + 1) + [1] * (length - first_sep - 1)
        assert tokens[0] == cls and tokens[first_sep] == tokens[length - 1] == sep
        assert not tokens[length:].any()
        count = min(6, max(1, round(length * 0.15)))
        positions = stored["masked_lm_positions"][:count]
        assert list(positions) == sorted(set(positions)) and not stored["masked_lm_positions"][count:].any()
        assert set(positions).isdisjoint({0, first_sep, length - 1})
        assert list(stored["masked_lm_weights"]) == [1.0] * count + [0.0] * (6 - count)
        original = tokens.copy()
        original[positions] = stored["masked_lm_ids"][:count]
        expected_labels = np.full(48, -100)
        expected_labels[stored["masked_lm_positions"]] = stored["masked_lm_ids"]
        assert np.array_equal(sample["labels"], expected_labels)
        replaced += int((tokens[positions] == mask).sum())
        kept += int((tokens[positions] == original[positions]).sum())
        first, second = original[1:first_sep].tolist(), original[first_sep + 1 : length - 1].tolist()
        starts, follows = _where(documents, first), _where(documents, second)
        assert first and second and starts and follows
        is_random = int(stored["next_sentence_labels"][0])
        labels_seen.add(is_random)
        if not is_random:  # the second span comes after the first in its document (ends may be trimmed)
            assert any(d == e and o + len(first) <= p for d, o in starts for e, p in follows)
    assert labels_seen == {0, 1} and replaced > 4 * kept > 0


def test_mlm_output_does_not_depend_on_partitions_or_workers(tmp_path: Path, cli, reader) -> None:
    make_results4(tmp_path / "results4", parts=5, documents=12)
    vocab = make_vocab(tmp_path / "vocab.txt")
    outs = []
    for k, options in enumerate((["--workers", "2", "--partitions", "5"], ["--workers", "1"])):
        outs.append(tmp_path / f"out{k}")
        result = cli(
            "enwiki", tmp_path / "results4", "--out", outs[-1], "--vocab-file", vocab, *MLM, *options
        )
        assert result.returncode == 0, result.stderr
    for split in ("train", "val"):
        assert reader(outs[0] / split) == reader(outs[1] / split)


def test_kill_then_resume_equals_an_uninterrupted_run(tmp_path: Path, cli, reader) -> None:
    make_results4(tmp_path / "results4", parts=8, documents=150)
    vocab = make_vocab(tmp_path / "vocab.txt")
    options = [tmp_path / "results4", "--vocab-file", vocab, *MLM, "--workers", "2", "--partitions", "8"]
    out = tmp_path / "out"
    finished = kill_midway("enwiki", [*options, "--out", out], out / "train")
    result = cli("enwiki", *options, "--out", out, "--resume")
    assert result.returncode == 0, result.stderr
    assert f"resuming: {len(finished)} of " in result.stderr
    fresh = tmp_path / "fresh"
    assert cli("enwiki", *options, "--out", fresh).returncode == 0
    for split in ("train", "val"):
        assert reader(out / split) == reader(fresh / split)


def test_mlm_needs_a_bert_vocabulary(tmp_path: Path, cli) -> None:
    make_results4(tmp_path / "results4", parts=1, documents=2)
    result = cli("enwiki", tmp_path / "results4", "--out", tmp_path / "out", "--format", "mlm")
    assert result.returncode == 1 and "--format mlm needs --vocab-file" in result.stderr
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\nthe\n")
    result = cli(
        "enwiki", tmp_path / "results4", "--out", tmp_path / "out", "--format", "mlm", "--vocab-file", vocab
    )
    assert result.returncode == 1 and "lacks [MASK]" in result.stderr
    text = cli("enwiki", tmp_path / "results4", "--out", tmp_path / "text")
    assert text.returncode == 0, text.stderr
    with pytest.raises(ValueError, match="enwiki --format mlm"):
        StreamingEnWiki(local=str(tmp_path / "text"), split="train")
