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
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from dropscale.layers import Dropout
from dropscale.scaling import Scaling, ScalingLike, get_scaling
from dropscale.structured import EmbeddingDropout, RNNDropout, WeightDropout

__all__ = ["AWD_DEFAULT_P", "AWDLSTM", "BatchFirstLM", "Hidden", "with_dropout_sites"]

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
        # Sites swapped in by with_dropout_sites or a study take no generator.
        kw = {} if generator is None else {"generator": generator}
        x = self.embed_drop(tokens, **kw)  # (T, B, emb)
        x = self.input_drop(x, **kw)
        new_hidden: Hidden = []
        for i, rnn in enumerate(self.rnns):
            x, state = rnn(x, hidden[i], **kw)  # (T, B, width_i)
            new_hidden.append(state)
            if i < len(self.hidden_drops):
                x = self.hidden_drops[i](x, **kw)
        x = self.output_drop(x, **kw)
        return self.decoder(x), new_hidden

    def extra_repr(self) -> str:
        sites = ", ".join(f"{k}={v:g}" for k, v in self.p.items())
        return f"p=({sites}), scaling={self.scaling.name!r}"


# ------------------------------------------------- the same model, Dropout sites


class _RowDroppedEmbedding(nn.Module):
    """Embedding lookup in ``drop(W)``, ``drop`` sharing one decision per row."""

    def __init__(self, embedding: nn.Embedding, drop: nn.Module) -> None:
        super().__init__()
        self.embedding = embedding
        self.drop = drop

    def forward(self, tokens: Tensor) -> Tensor:
        weight = self.drop(self.embedding.weight)  # (V, D), rows kept or zeroed
        return F.embedding(tokens, weight, padding_idx=self.embedding.padding_idx)


class _DropConnect(nn.Module):
    """An ``nn.LSTM`` run with ``drop(W)`` in place of each named weight ``W``."""

    def __init__(self, module: nn.Module, drop: nn.Module, names: tuple[str, ...]):
        super().__init__()
        self.module = module
        self.drop = drop
        self.names = names

    def forward(self, x: Tensor, hidden: tuple[Tensor, Tensor]):
        params = dict(self.module.named_parameters())
        dropped = {name: self.drop(params[name]) for name in self.names}
        return functional_call(self.module, dropped, (x, hidden))


def with_dropout_sites(model: AWDLSTM) -> AWDLSTM:
    """Rebuild ``model``'s five dropouts from :class:`dropscale.Dropout` modules.

    Each structured layer is replaced by the same operation written with a
    plain :class:`~dropscale.Dropout` (same ``p`` and convention): embedding
    dropout is ``Dropout(shared_dims=(1,))`` applied to the (V, D) matrix,
    time-locked dropout is ``Dropout(shared_dims=(0,))`` on (T, B, H), and
    weight dropout applies ``Dropout`` to each ``weight_hh_l0``. Tools that
    act on every ``Dropout`` of a model (the study's mask streams and
    eval-scale sweep) then reach all five sites. Masks come from torch's
    global generator (``Dropout`` takes no generator here). Returns ``model``,
    changed in place.
    """
    conv = model.scaling

    def drop(p: float, shared: tuple[int, ...] = ()) -> Dropout:
        return Dropout(p, scaling=conv, shared_dims=shared)

    model.embed_drop = _RowDroppedEmbedding(model.encoder, drop(model.p["embed"], (1,)))
    model.input_drop = drop(model.p["input"], (0,))
    model.hidden_drops = nn.ModuleList(
        drop(model.p["hidden"], (0,)) for _ in model.hidden_drops
    )
    model.output_drop = drop(model.p["output"], (0,))
    model.rnns = nn.ModuleList(
        _DropConnect(r.module, drop(model.p["weight"]), r.names) for r in model.rnns
    )
    return model


class BatchFirstLM(nn.Module):
    """Next-token logits for independent windows: (N, T) ids -> (N, T, V).

    Every window starts from a zero state (no state is carried between
    windows), so windows can be shuffled and batched like examples.
    """

    def __init__(self, model: AWDLSTM) -> None:
        super().__init__()
        self.lm = model

    def forward(self, tokens: Tensor) -> Tensor:
        logits, _ = self.lm(tokens.t())  # (T, N, V)
        return logits.transpose(0, 1)
