"""shardflow.convert.pile: the Pile's published layout (``train/NN.jsonl.zst``, ``val.jsonl.zst``,
``test.jsonl.zst``) into one sub-folder per split, in parallel and resumable after a kill -9, read back by
``StreamingPile`` (as stored, and tokenized)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # the inputs' builders

from _text_inputs import make_pile, make_tokenizer  # noqa: E402
from _vision_inputs import kill_midway  # noqa: E402

from shardflow.dataset.text import StreamingPile  # noqa: E402

OPTIONS = ["--workers", "2", "--partitions", "8", "--size-limit", "64kb"]


def _read(out: Path, split: str, **kwargs) -> list:
    dataset = StreamingPile(local=str(out), split=split, **kwargs)
    return [dataset[i] for i in range(dataset.num_samples)]


def test_converts_every_split_with_two_workers(tmp_path: Path, cli) -> None:
    expected = make_pile(tmp_path / "pile", train_files=8, lines=120)
    out = tmp_path / "out"
    result = cli("pile", tmp_path / "pile", "--out", out, *OPTIONS)
    assert result.returncode == 0, result.stderr
    assert "pile: 960 samples" in result.stderr and "train/07.jsonl.zst: 120 lines" in result.stderr
    assert len(list((out / "train").glob("part.*"))) > 4  # whole files: a partition may get two
    for split in ("train", "val", "test"):
        assert _read(out, split) == expected[split], split
    tokenizer = make_tokenizer(tmp_path / "tokenizer")
    tokenized = _read(out, "val", tokenizer_name=str(tokenizer), max_seq_len=24)
    first = tokenized[0]
    assert len(first["input_ids"]) == 24 and len(first["attention_mask"]) == 24
    words = expected["val"][0]["text"].lower().split()
    assert first["attention_mask"] == [1] * min(24, len(words)) + [0] * max(0, 24 - len(words))


def test_kill_then_resume_equals_an_uninterrupted_run(tmp_path: Path, cli, reader) -> None:
    expected = make_pile(tmp_path / "pile", train_files=8, lines=1500)
    out = tmp_path / "out"
    finished = kill_midway("pile", [tmp_path / "pile", "--out", out, *OPTIONS], out / "train")
    result = cli("pile", tmp_path / "pile", "--out", out, "--resume", *OPTIONS)
    assert result.returncode == 0, result.stderr
    assert f"resuming: {len(finished)} of " in result.stderr
    fresh = tmp_path / "fresh"
    assert cli("pile", tmp_path / "pile", "--out", fresh, *OPTIONS).returncode == 0
    for split in ("train", "val", "test"):
        assert reader(out / split) == reader(fresh / split) == expected[split], split


def test_uncompressed_files_and_one_split(tmp_path: Path, cli, reader) -> None:
    expected = make_pile(tmp_path / "pile", train_files=2, lines=40, compressed=False)
    out = tmp_path / "out"
    result = cli("pile", tmp_path / "pile", "--out", out, "--split", "val", "--split", "test")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["test", "val"]
    assert reader(out / "test") == expected["test"]


def test_a_line_without_its_set_name_names_its_file_and_line(tmp_path: Path, cli, reader) -> None:
    make_pile(tmp_path / "pile", train_files=1, lines=4, compressed=False)
    val = tmp_path / "pile" / "val.jsonl"
    val.write_text(val.read_text() + '{"text": "no meta", "meta": {}}\n')
    refused = cli("pile", tmp_path / "pile", "--out", tmp_path / "out")
    assert refused.returncode == 1
    assert f"{val}:2: 'meta' is not an object with a string 'pile_set_name'" in refused.stderr
    assert not [p for p in (tmp_path / "out").rglob("*") if p.is_file()]  # train, converted first, removed
    skipped = cli("pile", tmp_path / "pile", "--out", tmp_path / "out", "--skip-bad")
    assert skipped.returncode == 0 and "1 skipped" in skipped.stderr
    assert len(reader(tmp_path / "out" / "val")) == 1


def test_a_folder_without_the_layout_is_refused(tmp_path: Path, cli) -> None:
    (tmp_path / "pile").mkdir()
    result = cli("pile", tmp_path / "pile", "--out", tmp_path / "out")
    assert result.returncode == 1 and "expected train/00.jsonl.zst" in result.stderr
    with pytest.raises(Exception, match="group_method"):
        StreamingPile(local=str(tmp_path), group_method="concat")
