"""Data layer: HAM10000 and generic labelled folders -> `Record`s; the committed split."""
from .datasets import DatasetError, ImagesMissing, Record, Records, load_ham10000, load_labelled_folder, load_dataset
from .splits import DEFAULT_SPLIT_FILE, balanced_subset, make_split, read_split, select_split, split_sha256, write_split

__all__ = [
    "DatasetError", "ImagesMissing", "Record", "Records", "load_ham10000", "load_labelled_folder", "load_dataset",
    "DEFAULT_SPLIT_FILE", "balanced_subset", "make_split", "read_split", "select_split", "split_sha256", "write_split",
]
