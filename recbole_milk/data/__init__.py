"""New-item data pipeline: dataset with modality features and item split, warm-only sampler, candidate-restricted
full-sort evaluation loader, and the create_dataset / data_preparation entry points."""
from recbole_milk.data.dataloader import NewItemFullSortEvalDataLoader
from recbole_milk.data.dataset import (
    ROLE_PAD,
    ROLE_TEST,
    ROLE_VALID,
    ROLE_WARM,
    DataError,
    NewItemDataset,
)
from recbole_milk.data.sampler import WarmItemSampler, phase_item_pool
from recbole_milk.data.utils import create_dataset, data_preparation

__all__ = [
    "NewItemDataset", "NewItemFullSortEvalDataLoader", "WarmItemSampler", "DataError", "create_dataset",
    "data_preparation", "phase_item_pool", "ROLE_PAD", "ROLE_WARM", "ROLE_VALID", "ROLE_TEST",
]
