"""Datasets for the study: each loader returns a :class:`Dataset` of tensors."""

from dropscale.data.cache import cache_dir
from dropscale.data.digits import Dataset, load_digits_split
from dropscale.data.idx import IDX_SETS, IdxFormatError, load_idx_dataset, read_idx
from dropscale.data.shakespeare import get_shakespeare, shakespeare_dir
from dropscale.data.text import Corpus, Vocab, batchify, bptt_windows, load_corpus

__all__ = [
    "IDX_SETS",
    "Corpus",
    "Dataset",
    "IdxFormatError",
    "Vocab",
    "batchify",
    "bptt_windows",
    "cache_dir",
    "get_shakespeare",
    "load_corpus",
    "load_digits_split",
    "load_idx_dataset",
    "read_idx",
    "shakespeare_dir",
]
