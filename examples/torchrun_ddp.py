"""A plain training loop under torchrun with DistributedDataParallel: StreamingDataLoader needs no glue.

    torchrun --nproc_per_node 2 examples/torchrun_ddp.py                      # CPU, gloo
    torchrun --nproc_per_node 2 examples/torchrun_ddp.py --stop-at-step 40    # checkpoint, then stop
    torchrun --nproc_per_node 2 examples/torchrun_ddp.py --resume <ckpt>/step40.pt

Each rank reads its own share of every epoch (the dataset finds the ranks from torch.distributed), each
``iter(loader)`` is the next epoch with its own order, and the checkpoint holds ``loader.state_dict()`` beside
the model and the optimizer: loaded into a new loader, the next ``iter()`` continues at the next sample. The
state is the same on every rank, so rank 0 saves it. Without ``--remote`` the example writes a tiny dataset
of its own first.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.distributed as dist
from tiny_data import CLASSES, FEATURES, default_folder, ensure_dataset, recipe_parser, write_record
from torch.nn.parallel import DistributedDataParallel

from shardflow.dataset import StreamingDataLoader, StreamingDataset


def main() -> None:
    parser = recipe_parser(__doc__, workers=2)
    parser.add_argument("--checkpoints", type=Path, default=default_folder("torchrun-ckpt"))
    parser.add_argument("--stop-at-step", type=int, default=None, help="checkpoint there and stop")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    dist.init_process_group("gloo")  # torchrun's environment variables say where and who
    rank = dist.get_rank()
    remote = ensure_dataset(args.remote, args.samples)
    dataset = StreamingDataset(remote=str(remote), local=args.cache, shuffle=True, shuffle_seed=7)
    loader = StreamingDataLoader(dataset, batch_size=args.batch_size, num_workers=args.workers)
    model = DistributedDataParallel(torch.nn.Linear(FEATURES, CLASSES))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)

    first_epoch, step = 0, 0
    if args.resume:
        checkpoint = torch.load(args.resume)
        model.module.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        loader.load_state_dict(checkpoint["loader"])  # the next iter(loader) continues there
        first_epoch, step = checkpoint["next_epoch"], checkpoint["step"]

    seen: list[int] = []
    stopped = False
    for epoch in range(first_epoch, args.epochs):
        for i, batch in enumerate(loader):
            seen.extend(batch["id"].tolist())
            loss = torch.nn.functional.cross_entropy(model(batch["x"]), batch["y"])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            step += 1
            if step == args.stop_at_step:
                if rank == 0:
                    args.checkpoints.mkdir(parents=True, exist_ok=True)
                    torch.save(
                        {
                            "model": model.module.state_dict(),
                            "optimizer": optimizer.state_dict(),
                            "loader": loader.state_dict(),
                            "next_epoch": epoch + (i + 1 == len(loader)),  # the loader's next iter()
                            "step": step,
                        },
                        args.checkpoints / f"step{step}.pt",
                    )
                stopped = True
                break
        if stopped:
            break
    write_record(args.record, rank, seen, len(dataset))
    dist.barrier()
    if rank == 0:
        print(f"trained to step {step} on {dist.get_world_size()} process(es); last loss {loss.item():.3f}")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
