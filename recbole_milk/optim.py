"""One optimizer object for a model whose embedding tables have sparse gradients and whose other weights are dense."""
from typing import Any, Dict, List, Optional

import torch
from torch import nn

from recbole_milk.errors import ConfigError


def sparse_embedding_weights(model: nn.Module) -> List[nn.Parameter]:
    """Weights of the model's embedding tables built with sparse=True (their gradients are sparse row sets)."""
    return [module.weight for module in model.modules() if isinstance(module, nn.Embedding) and module.sparse]


class DenseSparseAdam:
    """Adam on the dense parameters and lazy Adam (torch.optim.SparseAdam) on sparse-gradient embedding tables.

    Dense Adam moves every row of a table on every step (its moments keep decaying even at zero gradient), so an
    epoch costs batches x table rows: quadratic when users and interactions grow together. Lazy Adam touches only
    the rows a batch holds, which makes the epoch linear in interactions. It is not the same update: rows not in
    the batch keep their moments and values until they appear again.
    """

    def __init__(self, dense: List[nn.Parameter], sparse: List[nn.Parameter], lr: float):
        if not sparse:
            raise ValueError("DenseSparseAdam needs at least one sparse-gradient parameter; use torch.optim.Adam")
        self.optimizers: List[torch.optim.Optimizer] = []
        if dense:
            self.optimizers.append(torch.optim.Adam(dense, lr=lr))
        self.optimizers.append(torch.optim.SparseAdam(sparse, lr=lr))

    @property
    def param_groups(self) -> List[Dict[str, Any]]:
        return [group for optimizer in self.optimizers for group in optimizer.param_groups]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for optimizer in self.optimizers:
            optimizer.zero_grad(set_to_none=set_to_none)

    def step(self, closure: Optional[Any] = None) -> None:
        if closure is not None:
            raise ValueError("DenseSparseAdam.step does not take a closure")
        for optimizer in self.optimizers:
            optimizer.step()

    def state_dict(self) -> Dict[str, Any]:
        return {"optimizers": [optimizer.state_dict() for optimizer in self.optimizers]}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        states = state.get("optimizers") if isinstance(state, dict) else None
        if states is None or len(states) != len(self.optimizers):
            raise ConfigError("Option 'resume_from': the checkpoint's optimizer state does not come from the same "
                              "dense/sparse optimizer; resume with the sparse_user_gradients setting it was trained "
                              "with.")
        for optimizer, optimizer_state in zip(self.optimizers, states):
            optimizer.load_state_dict(optimizer_state)
