"""The single-process examples run as written: token streams mixed as asked, an image folder converted and
learnt."""

from __future__ import annotations

from pathlib import Path

from ._recipes import run_example


def test_llm_tokens_mixes_the_streams_as_asked(tmp_path: Path) -> None:
    done = run_example("llm_tokens.py", ["--epoch-size", "1024"], tmp_path)
    assert "web: 768 sequences" in done.stdout and "code: 256 sequences" in done.stdout, done.stdout


def test_image_classification_converts_and_learns(tmp_path: Path) -> None:
    done = run_example("image_classification.py", ["--per-class", "40", "--epochs", "3"], tmp_path)
    assert "3 classes ['blue', 'green', 'red']" in done.stdout, done.stdout
