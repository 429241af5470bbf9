"""One optimizer object for a model whose embedding tables have sparse gradients and whose other weights are dense."""
import math
from typing import Any, Dict, Iterable, List, Optional, Tuple

import torch
from torch import nn

from recbole_milk.errors import ConfigError


def sparse_embedding_weights(model: nn.Module) -> List[nn.Parameter]:
    """Weights of the model's embedding tables built with sparse=True (their gradients are sparse row sets)."""
    return [module.weight for module in model.modules() if isinstance(module, nn.Embedding) and module.sparse]


class LazyAdam(torch.optim.Optimizer):
    """torch.optim.SparseAdam's update (lazy Adam: only the rows in the gradient move), computed with dense
    operations on those rows.

    SparseAdam builds three sparse tensors per step and adds them into the full tables; on CPU that costs several
    times the update itself. Here the distinct rows are gathered, updated and written back with index_select /
    index_copy_. The state (step, exp_avg, exp_avg_sq) and hyper-parameters are SparseAdam's, so its state dicts
    load either way.
    """

    def __init__(self, params: Iterable[nn.Parameter], lr: float = 1e-3, betas: Tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8):
        if not 0.0 < lr or not 0.0 < eps or not all(0.0 <= beta < 1.0 for beta in betas):
            raise ValueError(f"LazyAdam: invalid lr={lr}, betas={betas} or eps={eps}")
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps})

    @torch.no_grad()
    def step(self, closure: Optional[Any] = None) -> None:
        if closure is not None:
            raise ValueError("LazyAdam.step does not take a closure")
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for param in group["params"]:
                if param.grad is None:
                    continue
                if not param.grad.is_sparse:
                    raise RuntimeError("LazyAdam takes sparse gradients (nn.Embedding(..., sparse=True)); use Adam "
                                       "for dense ones")
                grad = param.grad.coalesce()
                rows, values = grad.indices()[0], grad.values()
                if values.numel() == 0:
                    continue
                state = self.state[param]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)
                state["step"] += 1
                exp_avg = state["exp_avg"].index_select(0, rows)
                exp_avg_sq = state["exp_avg_sq"].index_select(0, rows)
                exp_avg.add_(values.sub(exp_avg).mul_(1 - beta1))
                exp_avg_sq.add_(values.pow(2).sub_(exp_avg_sq).mul_(1 - beta2))
                state["exp_avg"].index_copy_(0, rows, exp_avg)
                state["exp_avg_sq"].index_copy_(0, rows, exp_avg_sq)
                step_size = group["lr"] * math.sqrt(1 - beta2 ** state["step"]) / (1 - beta1 ** state["step"])
                param.index_add_(0, rows, exp_avg.div_(exp_avg_sq.sqrt_().add_(group["eps"])).mul_(-step_size))


class DenseSparseAdam:
    """Adam on the dense parameters and lazy Adam (LazyAdam, SparseAdam's update) on sparse-gradient embedding tables.

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
        self.optimizers.append(LazyAdam(sparse, lr=lr))

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
