"""Typed datasets of the text starter datasets: EnWiki's BERT pre-training samples and the Pile.

Both read what ``shardflow.convert.enwiki --format mlm`` / ``shardflow.convert.pile`` write, and what
mosaicml-streaming's converters of the same names write (the same columns), and yield what its
``StreamingEnWiki`` and ``StreamingPile`` yield. Their defaults for ``partition_algo``, ``shuffle_algo`` and
``shuffle_block_size`` are that library's for these classes (``orig``, ``py1s``, ``1 << 18``), so a
shuffled epoch visits the samples in its order.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from shardflow.dataset.dataset import StreamingDataset
from shardflow.dataset.errors import DatasetConfigError

__all__ = ["StreamingEnWiki", "StreamingPile"]

REFERENCE_DEFAULTS: dict[str, Any] = {
    "partition_algo": "orig",
    "shuffle_algo": "py1s",
    "shuffle_block_size": 1 << 18,
}
"""The order arguments mosaicml-streaming's starter datasets default to (not StreamingDataset's)."""

FIELD_DTYPES = {
    "input_ids": np.int32,
    "input_mask": np.int32,
    "attention_mask": np.int32,
    "segment_ids": np.int32,
    "token_type_ids": np.int32,
    "masked_lm_positions": np.int32,
    "masked_lm_ids": np.int32,
    "masked_lm_weights": np.float32,
    "next_sentence_labels": np.int32,
    "labels": np.int32,
}
"""The element type of each EnWiki ``bytes`` column."""


def with_reference_defaults(kwargs: dict[str, Any]) -> dict[str, Any]:
    """``kwargs`` with :data:`REFERENCE_DEFAULTS` for the order arguments not given."""
    return {**REFERENCE_DEFAULTS, **kwargs}


def require_columns(dataset: StreamingDataset, names: tuple[str, ...], writer: str) -> None:
    """Raise :class:`DatasetConfigError` unless the dataset's shards have the columns ``names``."""
    have = dataset.shards[0].columns
    absent = [name for name in names if name not in have]
    if absent:
        raise DatasetConfigError(
            f"{type(dataset).__name__} reads columns {list(names)}, but {dataset.streams[0].describe()} has "
            f"{sorted(have)} (no {', '.join(absent)}): give a dataset written by {writer}"
        )


class StreamingEnWiki(StreamingDataset):
    """English Wikipedia as BERT pre-training samples (``shardflow.convert.enwiki --format mlm``).

    Yields ``{input_ids, token_type_ids, attention_mask: int32 arrays, labels: int64 array}``: ``labels``
    is -100 except at the masked positions, which hold the original tokens (as mosaicml-streaming's
    ``StreamingEnWiki``, the padding entries of ``masked_lm_positions`` set position 0's label to 0).
    Takes :class:`StreamingDataset`'s arguments.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**with_reference_defaults(kwargs))
        require_columns(
            self,
            ("input_ids", "input_mask", "segment_ids", "masked_lm_positions", "masked_lm_ids"),
            "shardflow.convert.enwiki --format mlm",
        )
        self.field_dtypes = dict(FIELD_DTYPES)

    def get_item(self, sample_id: int) -> dict[str, np.ndarray]:
        """The sample's model inputs and masked-token labels."""
        sample = super().get_item(sample_id)
        arrays = {key: np.frombuffer(value, self.field_dtypes[key]) for key, value in sample.items()}
        input_ids = arrays["input_ids"]
        labels = np.full(len(input_ids), -100, np.int64)
        labels[arrays["masked_lm_positions"]] = arrays["masked_lm_ids"]
        return {
            "input_ids": input_ids.copy(),
            "token_type_ids": arrays["segment_ids"].copy(),
            "attention_mask": arrays["input_mask"].copy(),
            "labels": labels,
        }


class StreamingPile(StreamingDataset):
    """The Pile (``shardflow.convert.pile``): ``{text, pile_set_name}``, or the text tokenized.

    Args:
        tokenizer_name: A Hugging Face tokenizer name or folder (loaded with ``transformers``'
            ``AutoTokenizer``, which must be installed: ``pip install transformers``). Without one, each
            sample is yielded as stored.
        max_seq_len: Tokens per sample (required with a tokenizer): the text is truncated and padded to it.
        group_method: How texts become token samples; only ``'truncate'``.
        **kwargs: :class:`StreamingDataset`'s arguments.
    """

    def __init__(
        self,
        *,
        tokenizer_name: str | None = None,
        max_seq_len: int | None = None,
        group_method: str = "truncate",
        **kwargs: Any,
    ) -> None:
        if group_method != "truncate":
            raise DatasetConfigError(f"group_method={group_method!r}: only 'truncate' is supported")
        if tokenizer_name is not None and (type(max_seq_len) is not int or max_seq_len < 1):
            raise DatasetConfigError(f"max_seq_len={max_seq_len!r}: a tokenizer needs a positive int")
        super().__init__(**with_reference_defaults(kwargs))
        require_columns(self, ("text",), "shardflow.convert.pile")
        self.tokenizer_name = tokenizer_name
        self.max_seq_len = max_seq_len
        self.group_method = group_method
        self.tokenizer = _auto_tokenizer(tokenizer_name) if tokenizer_name is not None else None

    def _tokenize(self, text_sample: dict[str, Any]) -> Any:
        """The tokenizer's output for the sample's text, truncated and padded to ``max_seq_len``."""
        assert self.tokenizer is not None
        return self.tokenizer(
            text_sample["text"], truncation=True, padding="max_length", max_length=self.max_seq_len
        )

    def get_item(self, sample_id: int) -> Any:
        """The sample, tokenized when a tokenizer was given."""
        sample = super().get_item(sample_id)
        return sample if self.tokenizer is None else self._tokenize(sample)


def _auto_tokenizer(name: str) -> Any:
    """``AutoTokenizer.from_pretrained(name)``, with a pad token (its end-of-text token when it has none)."""
    try:
        from transformers import AutoTokenizer
    except ImportError as exc:
        raise DatasetConfigError(
            f"tokenizer_name={name!r} needs the transformers package: pip install 'shardflow-dataset[text]' "
            "(or pip install transformers)"
        ) from exc
    tokenizer = AutoTokenizer.from_pretrained(name)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer
