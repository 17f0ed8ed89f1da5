"""The AWD-LSTM language model, built from dropscale's own dropout layers.

Merity, Keskar and Socher, "Regularizing and Optimizing LSTM Language Models"
(2017, https://arxiv.org/abs/1708.02182). Five dropout sites, all under one
scaling convention (``p`` drop probability, ``q = 1 - p``, kept units times
``a(q)`` in training, every unit times ``b(q)`` at inference):

============  ========================================  ====================
site          what one decision ``m ~ Bernoulli(q)``    dropscale layer
              covers
============  ========================================  ====================
``embed``     one row of the embedding matrix (a word   :class:`EmbeddingDropout`
              is dropped wherever it occurs)
``input``     one (sequence, feature) of the embedded   :class:`RNNDropout`
              input, shared by every time step
``hidden``    one (sequence, feature) of the output of  :class:`RNNDropout`
              each LSTM layer but the last
``output``    one (sequence, feature) of the last       :class:`RNNDropout`
              layer's output, before the decoder
``weight``    one entry of each hidden-to-hidden        :class:`WeightDropout`
              matrix ``weight_hh_l0`` (DropConnect)
============  ========================================  ====================

The decoder's weight is the embedding matrix itself (tied weights), so the
last LSTM layer outputs ``emb_size`` features. Inputs are time-major token
ids of shape (T, B), as :func:`dropscale.data.batchify` produces them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from dropscale.scaling import Scaling, ScalingLike, get_scaling
from dropscale.structured import EmbeddingDropout, RNNDropout, WeightDropout

__all__ = ["AWD_DEFAULT_P", "AWDLSTM", "Hidden"]

#: The drop probabilities of the AWD-LSTM paper's Penn Treebank model, per
#: site; a model multiplies all five by one ``drop_mult``.
AWD_DEFAULT_P: dict[str, float] = {
    "embed": 0.1,
    "input": 0.4,
    "hidden": 0.25,
    "output": 0.4,
    "weight": 0.5,
}

#: (h, c) per layer, each of shape (1, B, hidden_l).
Hidden = list[tuple[Tensor, Tensor]]


@dataclass(frozen=True)
class _Sizes:
    vocab: int
    emb: int
    hidden: int
    layers: int


class AWDLSTM(nn.Module):
    """Embedding -> stacked LSTMs -> tied decoder, with the five AWD dropouts.

    Args:
        vocab_size: number of token ids.
        emb_size: embedding width (also the last LSTM layer's width).
        hidden_size: width of every other LSTM layer.
        n_layers: number of LSTM layers (at least 1).
        p: drop probability per site (keys ``embed``, ``input``, ``hidden``,
            ``output``, ``weight``); missing keys take :data:`AWD_DEFAULT_P`.
        drop_mult: multiplies every site's ``p`` (fastai's ``drop_mult``); the
            products must stay in [0, 1].
        scaling: the convention of all five sites.
        tie_weights: use the embedding matrix as the decoder's weight.

    Example::

        >>> import torch
        >>> from dropscale.models import AWDLSTM
        >>> lm = AWDLSTM(100, emb_size=8, hidden_size=16, n_layers=2)
        >>> logits, hidden = lm(torch.zeros(5, 3, dtype=torch.long))
        >>> tuple(logits.shape)
        (5, 3, 100)
    """

    def __init__(
        self,
        vocab_size: int,
        *,
        emb_size: int = 400,
        hidden_size: int = 1150,
        n_layers: int = 3,
        p: Mapping[str, float] | None = None,
        drop_mult: float = 1.0,
        scaling: ScalingLike = "inverted",
        tie_weights: bool = True,
    ) -> None:
        super().__init__()
        for name, value in (
            ("vocab_size", vocab_size),
            ("emb_size", emb_size),
            ("hidden_size", hidden_size),
            ("n_layers", n_layers),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        unknown = set(p or {}) - set(AWD_DEFAULT_P)
        if unknown:
            raise ValueError(
                f"p: unknown dropout sites {sorted(unknown)}; the sites are "
                f"{', '.join(AWD_DEFAULT_P)}"
            )
        probs = {
            k: float(v) * drop_mult for k, v in {**AWD_DEFAULT_P, **(p or {})}.items()
        }
        for site, value in probs.items():
            if not 0.0 <= value <= 1.0:
                raise ValueError(
                    f"p[{site!r}] * drop_mult = {value:g} is outside [0, 1]; "
                    "lower drop_mult or that site's p"
                )
        self.sizes = _Sizes(vocab_size, emb_size, hidden_size, n_layers)
        self.p = probs
        self.scaling: Scaling = get_scaling(scaling)
        conv = self.scaling

        self.encoder = nn.Embedding(vocab_size, emb_size)
        self.embed_drop = EmbeddingDropout(self.encoder, probs["embed"], scaling=conv)
        self.input_drop = RNNDropout(probs["input"], scaling=conv, batch_first=False)
        widths = [emb_size] + [hidden_size] * (n_layers - 1) + [emb_size]
        if not tie_weights:
            widths[-1] = hidden_size if n_layers > 1 else emb_size
        self.rnns = nn.ModuleList(
            WeightDropout(
                nn.LSTM(widths[i], widths[i + 1]),
                probs["weight"],
                names=("weight_hh_l0",),
                scaling=conv,
            )
            for i in range(n_layers)
        )
        self.hidden_drops = nn.ModuleList(
            RNNDropout(probs["hidden"], scaling=conv, batch_first=False)
            for _ in range(n_layers - 1)
        )
        self.output_drop = RNNDropout(probs["output"], scaling=conv, batch_first=False)
        self.decoder = nn.Linear(widths[-1], vocab_size)
        if tie_weights:
            self.decoder.weight = self.encoder.weight
        self._init_weights()

    def _init_weights(self) -> None:
        # The AWD-LSTM initialisation: uniform(-0.1, 0.1) embeddings, a zero
        # decoder bias; the LSTMs keep PyTorch's uniform(+-1/sqrt(hidden)).
        nn.init.uniform_(self.encoder.weight, -0.1, 0.1)
        nn.init.zeros_(self.decoder.bias)
        if self.decoder.weight is not self.encoder.weight:
            nn.init.uniform_(self.decoder.weight, -0.1, 0.1)

    @property
    def widths(self) -> list[int]:
        """Output width of each LSTM layer."""
        return [rnn.module.hidden_size for rnn in self.rnns]

    def init_hidden(self, batch_size: int) -> Hidden:
        """Zero (h, c) for every layer, on the model's device."""
        ref = self.encoder.weight
        return [
            (
                ref.new_zeros(1, batch_size, width),
                ref.new_zeros(1, batch_size, width),
            )
            for width in self.widths
        ]

    def forward(
        self,
        tokens: Tensor,
        hidden: Hidden | None = None,
        *,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, Hidden]:
        """Logits of the next token at every position, and the new state.

        Args:
            tokens: int64 ids of shape (T, B).
            hidden: state from the previous window (``None``: zeros).
            generator: random generator for every mask of this call.

        Returns:
            logits of shape (T, B, vocab_size) and the state after the last
            step (not detached; detach it between windows).
        """
        if tokens.dim() != 2:
            raise ValueError(
                f"AWDLSTM expects time-major token ids (T, B), got shape "
                f"{tuple(tokens.shape)}"
            )
        if hidden is None:
            hidden = self.init_hidden(tokens.shape[1])
        x = self.embed_drop(tokens, generator=generator)  # (T, B, emb)
        x = self.input_drop(x, generator=generator)
        new_hidden: Hidden = []
        for i, rnn in enumerate(self.rnns):
            x, state = rnn(x, hidden[i], generator=generator)  # (T, B, width_i)
            new_hidden.append(state)
            if i < len(self.hidden_drops):
                x = self.hidden_drops[i](x, generator=generator)
        x = self.output_drop(x, generator=generator)
        return self.decoder(x), new_hidden

    def extra_repr(self) -> str:
        sites = ", ".join(f"{k}={v:g}" for k, v in self.p.items())
        return f"p=({sites}), scaling={self.scaling.name!r}"
