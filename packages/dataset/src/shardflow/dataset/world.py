"""Who reads the data: ranks and nodes from torch.distributed, the environment, or the caller."""

from __future__ import annotations

import os
from dataclasses import dataclass

from shardflow.dataset.errors import DatasetConfigError

__all__ = ["World", "WorkerSlot"]

_ENV_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")


@dataclass(frozen=True)
class World:
    """The data-parallel ranks of a run, grouped into nodes that each share one cache folder.

    Pass one to ``StreamingDataset(world=...)`` when the data-parallel group is not the whole job (tensor
    or pipeline parallelism: only data-parallel ranks split the data) or when the launcher sets no
    environment variables; otherwise :meth:`detect` finds it.

    Attributes:
        rank: This process's data-parallel rank, in ``[0, world_size)``.
        world_size: Data-parallel ranks in all.
        local_rank: This process's rank within its node.
        local_world_size: Ranks per node; ``world_size`` must be a multiple of it.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1

    def __post_init__(self) -> None:
        for name in ("rank", "world_size", "local_rank", "local_world_size"):
            value = getattr(self, name)
            if type(value) is not int:
                raise DatasetConfigError(f"World.{name}={value!r} must be an int")
        if self.world_size < 1 or self.local_world_size < 1:
            raise DatasetConfigError(
                f"World(world_size={self.world_size}, local_world_size={self.local_world_size}): both must "
                "be 1 or more"
            )
        if self.world_size % self.local_world_size:
            raise DatasetConfigError(
                f"World(world_size={self.world_size}, local_world_size={self.local_world_size}): every node "
                "must have the same number of ranks, so world_size must be a multiple of local_world_size"
            )
        if not 0 <= self.rank < self.world_size:
            raise DatasetConfigError(f"World.rank={self.rank} is outside [0, world_size={self.world_size})")
        if self.local_rank != self.rank % self.local_world_size:
            raise DatasetConfigError(
                f"World(rank={self.rank}, local_rank={self.local_rank}, local_world_size="
                f"{self.local_world_size}): ranks fill nodes in order, so local_rank must be "
                f"{self.rank % self.local_world_size}"
            )

    @property
    def num_nodes(self) -> int:
        """Nodes of the run."""
        return self.world_size // self.local_world_size

    @property
    def node(self) -> int:
        """This rank's node."""
        return self.rank // self.local_world_size

    def replicate(self, replication: int | None) -> World:
        """The world of distinct data streams when each group of ``replication`` ranks reads the same samples.

        Raises:
            DatasetConfigError: ``replication`` does not divide the ranks per node.
        """
        if replication is None or replication == 1:
            return self
        if replication < 1 or self.local_world_size % replication:
            raise DatasetConfigError(
                f"replication={replication} must be a positive divisor of the ranks per node "
                f"({self.local_world_size}): consecutive ranks of one node read the same samples"
            )
        return World(
            self.rank // replication,
            self.world_size // replication,
            self.local_rank // replication,
            self.local_world_size // replication,
        )

    @classmethod
    def detect(cls) -> World:
        """This process's world: torch.distributed if initialised, else the launcher's variables, else alone.

        ``LOCAL_WORLD_SIZE`` (set by torchrun) groups ranks into nodes; without it every rank is taken to
        be on one node.

        Raises:
            DatasetConfigError: The environment variables are not integers or contradict each other.
        """
        dist = _initialised_distributed()
        env = {name: os.environ.get(name) for name in _ENV_VARS}
        try:
            values = {name: int(value) for name, value in env.items() if value not in (None, "")}
        except ValueError:
            raise DatasetConfigError(
                f"the launcher's variables must be integers: {', '.join(f'{k}={v}' for k, v in env.items())}"
            ) from None
        if dist is not None:
            rank, size = dist
        else:
            rank, size = values.get("RANK", 0), values.get("WORLD_SIZE", 1)
        local_size = values.get("LOCAL_WORLD_SIZE", size)
        if size % local_size:
            # The variables describe another group than torch.distributed's (or are stale): one node.
            local_size = size
        return cls(rank, size, rank % local_size, local_size)

    def check_against_distributed(self) -> None:
        """Refuse an explicit world that torch.distributed's process group contradicts.

        Data-parallel groups may be smaller than the job (tensor/pipeline parallel), but they must divide it.

        Raises:
            DatasetConfigError: The process group's size is not a multiple of this world's.
        """
        dist = _initialised_distributed()
        if dist is None:
            return
        _, size = dist
        if size % self.world_size:
            raise DatasetConfigError(
                f"world={self} contradicts torch.distributed, which has {size} ranks: a data-parallel "
                f"world_size must divide it; pass world=None to take torch.distributed's"
            )


@dataclass(frozen=True)
class WorkerSlot:
    """Which of a rank's ``count`` loader workers (processes or threads) reads: worker ``index``.

    The rank's share of an epoch is split over its workers by this pair alone, so the same slot reads the
    same samples whichever kind of worker holds it. ``WorkerSlot()`` is a rank read by itself.
    """

    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if type(self.index) is not int or type(self.count) is not int or not 0 <= self.index < self.count:
            raise DatasetConfigError(
                f"WorkerSlot(index={self.index!r}, count={self.count!r}): count must be an int, 1 or more, "
                "and index an int in [0, count)"
            )


def _initialised_distributed() -> tuple[int, int] | None:
    """``(rank, world size)`` of torch.distributed's default group, or None when it is not initialised."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return None
