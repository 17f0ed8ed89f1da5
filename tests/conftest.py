"""Shared test settings: one thread per process (several test processes and other
jobs share two cores) and denormal floats flushed, as in the trainer."""

import torch

torch.set_num_threads(1)
torch.set_flush_denormal(True)
