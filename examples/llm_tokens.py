"""LLM-style pre-training data: fixed-length token sequences from two corpora, mixed 3:1 by ``Stream``.

    python examples/llm_tokens.py
    python examples/llm_tokens.py --web s3://bucket/web-tokens --code s3://bucket/code-tokens

Each sample is ``tokens: ndarray:uint16:<length + 1>`` (a training window and its next token), as a
tokenizer-and-pack step writes it. ``Stream(proportion=...)`` sets each corpus's share of an epoch of
``--epoch-size`` sequences, whatever the corpora's sizes (the smaller one is repeated as needed); the
dataset shuffles across both, and ``StreamingDataLoader`` reads whole batches of token windows as one
tensor. A tiny next-token model trains on them. The example counts the sequences each corpus gave and
exits with 1 if they are not the shares asked for. Without ``--web``/``--code`` it writes two tiny
corpora first: "web" tokens below 128, "code" tokens from 128.
"""

from __future__ import annotations

import argparse
import logging
import sys

import numpy as np
import torch
from tiny_data import default_folder, ensure_dataset

from shardflow.dataset import Stream, StreamingDataLoader, StreamingDataset

VOCAB = 256
SHARES = {"web": 0.75, "code": 0.25}


def corpus(offset: int, length: int):  # type: ignore[no-untyped-def]
    """Sample maker for a toy corpus: a counting sequence modulo 128 (learnable), shifted by ``offset``."""

    def sample(i: int) -> dict[str, np.ndarray]:
        start = np.random.default_rng(i + offset).integers(0, 128)
        return {"tokens": ((start + np.arange(length + 1)) % 128 + offset).astype(np.uint16)}

    return sample


class TinyLM(torch.nn.Module):
    """An embedding and a linear layer: enough to learn "the next token follows this one"."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(VOCAB, 32)
        self.out = torch.nn.Linear(32, VOCAB)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.out(self.embed(tokens))


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--web", default=None, help="the web corpus (default: a tiny one written first)")
    parser.add_argument("--code", default=None, help="the code corpus (default: a tiny one written first)")
    parser.add_argument("--cache", default=None, help="cache folder (default: shardflow's own)")
    parser.add_argument("--length", type=int, default=32, help="tokens per training window")
    parser.add_argument("--epoch-size", type=int, default=2048, help="sequences per epoch, both corpora")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    columns = {"tokens": f"ndarray:uint16:{args.length + 1}"}
    remotes = {
        "web": args.web
        or str(
            ensure_dataset(
                default_folder(f"web-{args.length}"),
                3000,
                corpus(0, args.length),
                columns,
                size_limit=1 << 16,
            )
        ),
        "code": args.code
        or str(
            ensure_dataset(
                default_folder(f"code-{args.length}"),
                400,
                corpus(128, args.length),
                columns,
                size_limit=1 << 16,
            )
        ),
    }
    streams = [
        Stream(
            remote=remotes[name],
            local=None if args.cache is None else f"{args.cache}/{name}",
            proportion=share,
        )
        for name, share in SHARES.items()
    ]
    dataset = StreamingDataset(streams=streams, epoch_size=args.epoch_size, shuffle=True, shuffle_seed=1)
    loader = StreamingDataLoader(dataset, batch_size=args.batch_size, num_workers=args.workers)

    model = TinyLM()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    counts = dict.fromkeys(SHARES, 0)
    losses = []
    for batch in loader:
        tokens = batch["tokens"].long()  # (batch, length + 1)
        counts["code"] += int((tokens[:, 0] >= 128).sum())
        counts["web"] += int((tokens[:, 0] < 128).sum())
        logits = model(tokens[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, VOCAB), tokens[:, 1:].reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())

    total = sum(counts.values())
    print(f"one epoch of {total} sequences ({len(losses)} batches); loss {losses[0]:.2f} -> {losses[-1]:.2f}")
    wrong = []
    for name, share in SHARES.items():
        expected = round(share * args.epoch_size)
        print(f"  {name}: {counts[name]} sequences, {counts[name] / total:.3f} of the epoch (asked {share})")
        if counts[name] != expected:
            wrong.append(f"{name} gave {counts[name]} sequences, not {expected}")
    if wrong:
        print("mixing is off: " + "; ".join(wrong), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
