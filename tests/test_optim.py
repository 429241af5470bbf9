"""DenseSparseAdam: dense Adam on dense weights, lazy Adam on sparse-gradient tables, one state for checkpoints."""
import copy

import pytest
import torch
from torch import nn

from recbole_milk.optim import DenseSparseAdam, LazyAdam, sparse_embedding_weights


class TwoTables(nn.Module):
    def __init__(self, sparse: bool):
        super().__init__()
        torch.manual_seed(0)
        self.users = nn.Embedding(6, 3, sparse=sparse)
        self.items = nn.Linear(4, 3)

    def loss(self, users, item_rows):
        return (self.users(users) * self.items(item_rows)).sum().pow(2)


def _optimizer(model):
    sparse = sparse_embedding_weights(model)
    dense = [p for p in model.parameters() if all(p is not s for s in sparse)]
    return DenseSparseAdam(dense, sparse, lr=0.1)


def _step(model, optimizer, users, rows):
    optimizer.zero_grad()
    model.loss(users, rows).backward()
    optimizer.step()


def test_only_sparse_embedding_tables_are_found():
    assert sparse_embedding_weights(TwoTables(sparse=False)) == []
    model = TwoTables(sparse=True)
    assert len(sparse_embedding_weights(model)) == 1 and sparse_embedding_weights(model)[0] is model.users.weight


def test_rows_outside_the_batch_do_not_move_while_dense_adam_moves_them():
    rows = torch.randn(2, 4)
    lazy, dense = TwoTables(sparse=True), TwoTables(sparse=False)
    lazy_opt, dense_opt = _optimizer(lazy), torch.optim.Adam(dense.parameters(), lr=0.1)
    for model, optimizer in ((lazy, lazy_opt), (dense, dense_opt)):
        _step(model, optimizer, torch.tensor([0, 1]), rows)
        _step(model, optimizer, torch.tensor([2, 3]), rows)
    # Step 2 never saw users 0 and 1: lazy Adam leaves them as step 1 left them, dense Adam keeps moving them on
    # their first-step momentum.
    after_first = TwoTables(sparse=True)
    _step(after_first, _optimizer(after_first), torch.tensor([0, 1]), rows)
    assert torch.equal(lazy.users.weight[:2], after_first.users.weight[:2])
    assert not torch.allclose(dense.users.weight[:2], after_first.users.weight[:2])
    assert torch.equal(lazy.users.weight[4:], TwoTables(sparse=True).users.weight[4:])  # never in a batch


def test_dense_weights_follow_plain_adam_exactly():
    rows, users = torch.randn(2, 4), torch.tensor([1, 4])
    lazy, reference = TwoTables(sparse=True), TwoTables(sparse=True)
    optimizer = _optimizer(lazy)
    adam = torch.optim.Adam(reference.items.parameters(), lr=0.1)
    sparse_adam = torch.optim.SparseAdam([reference.users.weight], lr=0.1)
    for _ in range(3):
        _step(lazy, optimizer, users, rows)
        adam.zero_grad(), sparse_adam.zero_grad()
        reference.loss(users, rows).backward()
        adam.step(), sparse_adam.step()
    for mine, theirs in zip(lazy.parameters(), reference.parameters()):
        assert torch.equal(mine, theirs)


def test_state_round_trip_continues_identically():
    rows = torch.randn(2, 4)
    a = TwoTables(sparse=True)
    opt_a = _optimizer(a)
    _step(a, opt_a, torch.tensor([0, 5]), rows)
    b = TwoTables(sparse=True)
    b.load_state_dict(a.state_dict())
    opt_b = _optimizer(b)
    # Deep copy, as a checkpoint file would: torch state dicts share tensors (e.g. Adam's step counter).
    opt_b.load_state_dict(copy.deepcopy(opt_a.state_dict()))
    for model, optimizer in ((a, opt_a), (b, opt_b)):
        _step(model, optimizer, torch.tensor([0, 2]), rows)
    for mine, theirs in zip(a.parameters(), b.parameters()):
        assert torch.equal(mine, theirs)


def test_a_dense_optimizer_state_is_refused_with_the_option_named():
    optimizer = _optimizer(TwoTables(sparse=True))
    dense_state = torch.optim.Adam(TwoTables(sparse=False).parameters()).state_dict()
    with pytest.raises(ValueError, match="sparse_user_gradients"):
        optimizer.load_state_dict(dense_state)


def test_needs_a_sparse_parameter():
    with pytest.raises(ValueError, match="torch.optim.Adam"):
        DenseSparseAdam(list(TwoTables(sparse=False).parameters()), [], lr=0.1)


def test_lazy_adam_makes_sparse_adam_s_update_and_reads_its_state():
    torch.manual_seed(0)
    tables = [nn.Embedding(50, 4, sparse=True) for _ in range(2)]
    tables[1].load_state_dict(tables[0].state_dict())
    reference, lazy = torch.optim.SparseAdam(tables[0].parameters(), lr=0.05), LazyAdam(tables[1].parameters(), lr=0.05)
    for _ in range(15):
        users, weights = torch.randint(0, 50, (30,)), torch.randn(30, 4)  # repeated rows, as in a batch
        for table, optimizer in zip(tables, (reference, lazy)):
            optimizer.zero_grad()
            (table(users) * weights).sum().pow(2).backward()
            optimizer.step()
    assert torch.allclose(tables[0].weight, tables[1].weight, atol=1e-6)
    resumed = LazyAdam(tables[0].parameters(), lr=0.05)
    resumed.load_state_dict(reference.state_dict())
    assert resumed.state[tables[0].weight]["step"] == 15


def test_lazy_adam_refuses_dense_gradients():
    weight = nn.Parameter(torch.ones(3, 2))
    weight.grad = torch.ones(3, 2)
    with pytest.raises(RuntimeError, match="sparse gradients"):
        LazyAdam([weight]).step()
