"""One run over several processes (torch.distributed): the process group, which process writes, and the few
collectives the plugin needs: parameter broadcast, gradient averaging and gathering evaluation pieces.

The plugin keeps RecBole's own DistributedDataParallel path off (RecBole's gradient hook densifies sparse embedding
gradients, its DistributedSampler pads the epoch with repeated samples, and its evaluation averages per-process
metrics weighted by batch counts). Instead every process holds the same model, trains on its share of each batch,
averages gradients here before each optimiser step, and evaluation gathers the per-user pieces, so its metrics are
those of one process. Outside a process group every function here is the one-process identity.
"""
from contextlib import contextmanager
from datetime import timedelta
from typing import Any, Dict, Iterator, List, Optional, Sequence

import torch
import torch.distributed as dist
from torch import nn

BACKENDS = ("auto", "gloo", "nccl")


def is_distributed() -> bool:
    """True inside a process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's global rank (0 outside a process group)."""
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_writer() -> bool:
    """Only rank 0 writes checkpoints, resume points, artefacts, caches and logs."""
    return rank() == 0


def backend() -> Optional[str]:
    """The process group's backend ('gloo', 'nccl'), or None for a one-process run."""
    return dist.get_backend() if is_distributed() else None


def resolve_backend(requested: str, device: torch.device) -> str:
    """`ddp_backend`: auto is nccl for CUDA devices and gloo on CPU."""
    if requested == "auto":
        return "nccl" if device.type == "cuda" else "gloo"
    return requested


def init_process_group(backend_name: str, global_rank: int, size: int, ip: str, port: int, timeout_s: float) -> None:
    """Join the run's process group (once per process). `timeout_s` bounds every collective, so a process whose
    peer hangs fails instead of waiting for ever."""
    if dist.is_initialized():
        if dist.get_rank() != global_rank or dist.get_world_size() != size:
            raise RuntimeError(f"this process already belongs to a process group (rank {dist.get_rank()} of "
                               f"{dist.get_world_size()}), not rank {global_rank} of {size}")
        return
    dist.init_process_group(backend=backend_name, init_method=f"tcp://{ip}:{port}", rank=global_rank,
                            world_size=size, timeout=timedelta(seconds=timeout_s))


def barrier() -> None:
    if is_distributed():
        dist.barrier()


@contextmanager
def writer_first() -> Iterator[None]:
    """Rank 0 runs the block first (it may build and cache shared files); the others run it once rank 0 is done."""
    if not is_writer():
        barrier()
    yield
    if is_writer():
        barrier()


def broadcast_object(value: Any) -> Any:
    """Rank 0's `value` on every process (picklable objects; tensors should be on the CPU)."""
    if not is_distributed():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_objects(value: Any) -> List[Any]:
    """Every process's `value`, in rank order, on every process."""
    if not is_distributed():
        return [value]
    gathered: List[Any] = [None] * world_size()
    dist.all_gather_object(gathered, value)
    return gathered


def broadcast_state(module: nn.Module) -> None:
    """Overwrite every process's parameters and persistent buffers with rank 0's, in place (the non-persistent
    buffers, such as item features, are built from the same data on every process)."""
    if not is_distributed():
        return
    with torch.no_grad():
        for tensor in module.state_dict().values():
            dist.broadcast(tensor, src=0)


def average_gradients(parameters: Sequence[nn.Parameter], sparse: Sequence[nn.Parameter] = ()) -> None:
    """Replace each parameter's gradient by the mean of the processes' gradients, as DistributedDataParallel would.

    A process whose batch left a parameter without a gradient counts zeros for it; a parameter no process has a
    gradient for keeps None (its optimiser skips it, as in one process). Dense gradients travel in one flat
    all-reduce per dtype; sparse ones (`sparse`: embedding tables built with sparse=True) as gathered row sets, so
    lazy Adam still sees sparse gradients.
    """
    if not is_distributed() or not parameters:
        return
    size = world_size()
    device = parameters[0].device
    present = torch.tensor([p.grad is not None for p in parameters], dtype=torch.int32, device=device)
    dist.all_reduce(present, op=dist.ReduceOp.MAX)
    sparse_ids = {id(p) for p in sparse}
    used = [p for p, has in zip(parameters, present.tolist()) if has]
    by_dtype: Dict[torch.dtype, List[nn.Parameter]] = {}
    for parameter in used:
        if id(parameter) in sparse_ids:
            _average_sparse(parameter, size)
        else:
            by_dtype.setdefault(parameter.dtype, []).append(parameter)
    for group in by_dtype.values():
        flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in group])
        dist.all_reduce(flat)
        flat.div_(size)
        offset = 0
        for parameter in group:
            parameter.grad = flat[offset: offset + parameter.numel()].view_as(parameter)
            offset += parameter.numel()


def _average_sparse(parameter: nn.Parameter, size: int) -> None:
    grad = parameter.grad
    if grad is None:
        grad = torch.sparse_coo_tensor(torch.zeros((1, 0), dtype=torch.long, device=parameter.device),
                                       parameter.new_zeros((0, *parameter.shape[1:])), parameter.shape)
    grad = grad.coalesce()
    rows, values = grad.indices()[0], grad.values()
    counts = [torch.zeros(1, dtype=torch.long, device=rows.device) for _ in range(size)]
    dist.all_gather(counts, torch.tensor([rows.numel()], device=rows.device))
    longest = int(max(count.item() for count in counts))
    padded_rows = torch.zeros(longest, dtype=rows.dtype, device=rows.device)
    padded_rows[: rows.numel()] = rows
    padded_values = values.new_zeros((longest, *values.shape[1:]))
    padded_values[: rows.numel()] = values
    all_rows = [torch.empty_like(padded_rows) for _ in range(size)]
    all_values = [torch.empty_like(padded_values) for _ in range(size)]
    dist.all_gather(all_rows, padded_rows)
    dist.all_gather(all_values, padded_values)
    lengths = [int(count.item()) for count in counts]
    rows = torch.cat([part[:n] for part, n in zip(all_rows, lengths)])
    values = torch.cat([part[:n] for part, n in zip(all_values, lengths)]) / size
    parameter.grad = torch.sparse_coo_tensor(rows.unsqueeze(0), values, parameter.shape)


class GradientAveragingOptimizer:
    """An optimiser that averages gradients across processes before each step, then clips them (clip_grad_norm:
    clipping the average, as one process would clip its batch's gradient), then steps the wrapped optimiser."""

    def __init__(self, optimizer: Any, parameters: Sequence[nn.Parameter], sparse: Sequence[nn.Parameter] = (),
                 clip_grad_norm: Optional[Dict[str, Any]] = None):
        self.optimizer = optimizer
        self.parameters = list(parameters)
        self.sparse = list(sparse)
        self.clip_grad_norm = clip_grad_norm

    @property
    def param_groups(self) -> List[Dict[str, Any]]:
        return self.optimizer.param_groups

    @property
    def state(self) -> Any:
        return self.optimizer.state

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def step(self, closure: Optional[Any] = None) -> Any:
        if closure is not None:
            raise ValueError("GradientAveragingOptimizer.step does not take a closure")
        average_gradients(self.parameters, self.sparse)
        if self.clip_grad_norm:
            nn.utils.clip_grad_norm_(self.parameters, **self.clip_grad_norm)
        return self.optimizer.step()

    def state_dict(self) -> Dict[str, Any]:
        return self.optimizer.state_dict()

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state)
