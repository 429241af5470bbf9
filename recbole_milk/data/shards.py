"""Each process's share of a training epoch in a multi-process run.

Every process builds the same RecBole training loader with the same seeded generator, so all of them shuffle the
epoch the same way and cut it into the same batches as one process would. A process keeps its share of each batch
(every world-th index, starting at its rank) before negatives are drawn: the shares are disjoint, together they are
the epoch, every process runs the same number of steps, and the batch of one step, over all processes, is the batch
one process would train on.
"""
from functools import lru_cache
from typing import Any, List, Sequence, Type


def batch_share(batch: Sequence[int], rank: int, world: int) -> List[int]:
    """Process `rank`'s share of one batch of sample indices."""
    return list(batch)[rank::world]


def shard_step(sample_size: int, step: int, world: int) -> int:
    """The batch size to cut the epoch with: `step`, made a little smaller only where the epoch's last batch would
    hold fewer samples than there are processes (a process with an empty batch could not compute a loss)."""
    while step > world and 0 < sample_size % step < world:
        step -= 1
    return step


class ShardedLoaderMixin:
    """A RecBole training loader that yields this process's share (`batch_share`) of each batch."""

    def __init__(self, config: Any, dataset: Any, sampler: Any, shuffle: bool = False, rank: int = 0, world: int = 1):
        # Set before RecBole's __init__, which sizes the batches (_init_batch_size_and_step) and binds collate_fn.
        self.shard_rank = rank
        self.shard_world = world
        super().__init__(config, dataset, sampler, shuffle=shuffle)

    def _init_batch_size_and_step(self) -> None:
        super()._init_batch_size_and_step()
        self.step = shard_step(self.sample_size, self.step, self.shard_world)

    def collate_fn(self, index: Sequence[int]) -> Any:
        return super().collate_fn(batch_share(index, self.shard_rank, self.shard_world))


@lru_cache(maxsize=None)
def sharded(loader_class: Type) -> Type:
    """`loader_class` (a RecBole training loader) with ShardedLoaderMixin mixed in."""
    return type(f"Sharded{loader_class.__name__}", (ShardedLoaderMixin, loader_class), {})
