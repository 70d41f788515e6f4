"""Datasets: on-disk adapters, the synthetic generator, the decode-once cache, class statistics and file checks.
The trial's data module (batches from the cache) is ``orchestrator.trial.data``."""

from orchestrator.data.adapters import DATASETS, Adapter, DataError, Pair, create_adapter, list_datasets
from orchestrator.data.prepare import adapter_for, dataset_sizes, prepare_data, resolve_pairs

__all__ = [
    "DATASETS",
    "Adapter",
    "DataError",
    "Pair",
    "adapter_for",
    "create_adapter",
    "dataset_sizes",
    "list_datasets",
    "prepare_data",
    "resolve_pairs",
]
