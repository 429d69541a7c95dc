"""Datasets: the synthetic benchmark, the JSONL + image-folder format and its loaders."""

from .records import DATA_FILE, Record, RowError, by_image_size, load_hf, read_jsonl, write_dataset
from .sources import load_records, resolve
from .synthetic import Sample, generate, make_sample

__all__ = [
    "DATA_FILE",
    "Record",
    "RowError",
    "Sample",
    "by_image_size",
    "generate",
    "load_records",
    "load_hf",
    "make_sample",
    "read_jsonl",
    "resolve",
    "write_dataset",
]
