"""Datasets for the study: each loader returns a :class:`Dataset` of tensors."""

from dropscale.data.digits import Dataset, load_digits_split

__all__ = ["Dataset", "load_digits_split"]
