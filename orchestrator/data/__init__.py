"""Datasets: on-disk adapters, the synthetic generator, the decode-once cache and the trial's data module."""

from orchestrator.data.adapters import DataError, IddLite, Pair
from orchestrator.data.prepare import DATASETS, dataset_sizes, list_datasets, prepare_data, resolve_pairs

__all__ = [
    "DATASETS",
    "DataError",
    "IddLite",
    "Pair",
    "dataset_sizes",
    "list_datasets",
    "prepare_data",
    "resolve_pairs",
]
