"""Text corpora for language models: reading, vocabularies, batches, BPTT windows.

Two folder layouts are understood:

* **split folders** in the WikiText-2 / Penn Treebank style: one file per split,
  named ``train.txt``, ``valid.txt``, ``test.txt`` (also ``*.train.txt`` as in
  PTB's ``ptb.train.txt`` and ``*.train.tokens`` as in WikiText's
  ``wiki.train.tokens``; ``valid`` may be spelled ``val`` or ``validation``);
* **a folder of plain .txt files** (such as the Shakespeare plays). The split
  rule: files are taken in name order, each file's token stream is cut into
  three contiguous pieces, the first ``fractions[0]`` of its tokens go to
  train, the next ``fractions[1]`` to valid and the rest to test, and the
  pieces are concatenated in file order. Every file thus contributes to every
  split, and no split sees text adjacent to another split's except at the
  two cut points per file.

Tokens: at word level each non-blank line becomes its tokens followed by the
end-of-line token ``<eos>`` (blank lines are skipped); at character level
every character, newlines included, is a token. The vocabulary is built from
the training split only: tokens seen fewer than ``min_freq`` times there, and
every token that appears only in valid or test, map to ``<unk>``.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

__all__ = [
    "EOS",
    "UNK",
    "Corpus",
    "Vocab",
    "batchify",
    "bptt_windows",
    "find_split_files",
    "load_corpus",
    "read_text_file",
    "tokenize",
]

log = logging.getLogger(__name__)

UNK = "<unk>"
EOS = "<eos>"
_SPLITS = ("train", "valid", "test")
_SPLIT_ALIASES = {"train": ("train",), "valid": ("valid", "val", "validation")}
_SPLIT_ALIASES["test"] = ("test",)
# A word: letters/digits with inner apostrophes (o'er, 'tis keeps its quote as a
# separate token); anything else that is not a space is a one-character token.
_WORD_RE = re.compile(r"\w+(?:'\w+)*|[^\w\s]")


def read_text_file(path: Path | str) -> str:
    """The file's text, decoded as strict UTF-8 (a leading BOM is dropped).

    Raises:
        ValueError: the file is empty or only whitespace, or is not UTF-8 (the
            message gives the offset of the first bad byte and a fix).
        OSError: the file cannot be read.
    """
    path = Path(path)
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ValueError(
            f"{path}: not UTF-8 text: byte 0x{raw[e.start]:02x} at offset "
            f"{e.start} cannot be decoded; convert the file to UTF-8, for "
            f"example with `iconv -f latin1 -t utf-8`"
        ) from None
    if not text.strip():
        what = "empty" if not raw else "only whitespace"
        raise ValueError(f"{path}: the file is {what}; a corpus file needs text")
    return text


def tokenize(
    text: str,
    *,
    level: str = "word",
    tokenizer: str = "whitespace",
    lower: bool = False,
) -> list[str]:
    """Split ``text`` into tokens.

    Args:
        level: ``"word"`` (tokens per line plus ``<eos>``) or ``"char"``.
        tokenizer: at word level, ``"whitespace"`` (for pre-tokenised text
            such as WikiText and PTB) or ``"words"`` (runs of letters and
            digits, and every punctuation mark on its own).
        lower: lower-case the text first.
    """
    if lower:
        text = text.lower()
    if level == "char":
        return list(text)
    if level != "word":
        raise ValueError(f"level must be 'word' or 'char', got {level!r}")
    if tokenizer == "whitespace":
        split = str.split
    elif tokenizer == "words":
        split = _WORD_RE.findall
    else:
        raise ValueError(
            f"tokenizer must be 'whitespace' or 'words', got {tokenizer!r}"
        )
    out: list[str] = []
    for line in text.splitlines():
        words = split(line)
        if words:
            out.extend(words)
            out.append(EOS)
    return out


class Vocab:
    """Token <-> id mapping; id 0 is ``<unk>``, unknown tokens map to it.

    Build one with :meth:`from_tokens`; ids follow descending training
    frequency (ties by first appearance), after the special tokens.
    """

    def __init__(self, itos: Sequence[str]) -> None:
        if not itos or itos[0] != UNK:
            raise ValueError(f"a vocabulary starts with {UNK!r}, got {list(itos[:1])}")
        if len(set(itos)) != len(itos):
            raise ValueError("a vocabulary cannot list a token twice")
        self.itos: tuple[str, ...] = tuple(itos)
        self.stoi: dict[str, int] = {t: i for i, t in enumerate(self.itos)}

    @classmethod
    def from_tokens(
        cls,
        tokens: Iterable[str],
        *,
        min_freq: int = 1,
        max_size: int | None = None,
        specials: Sequence[str] = (EOS,),
    ) -> Vocab:
        """The vocabulary of tokens seen at least ``min_freq`` times.

        ``max_size`` caps the number of ids (specials included) by keeping
        the most frequent tokens.
        """
        if isinstance(min_freq, bool) or not isinstance(min_freq, int) or min_freq < 1:
            raise ValueError(f"min_freq must be a positive integer, got {min_freq!r}")
        counts = Counter(tokens)
        head = [UNK] + [s for s in specials if s != UNK]
        ranked = [
            t
            for t, c in sorted(counts.items(), key=lambda kv: -kv[1])
            if c >= min_freq and t not in head
        ]
        itos = head + ranked
        if max_size is not None:
            if max_size < len(head):
                raise ValueError(
                    f"max_size must be at least {len(head)} (the special tokens), "
                    f"got {max_size}"
                )
            itos = itos[:max_size]
        return cls(itos)

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, tokens: Iterable[str]) -> Tensor:
        """int64 ids of ``tokens``; unknown tokens become ``<unk>`` (id 0)."""
        get = self.stoi.get
        return torch.tensor([get(t, 0) for t in tokens], dtype=torch.int64)

    def decode(self, ids: Iterable[int]) -> list[str]:
        return [self.itos[int(i)] for i in ids]

    def __repr__(self) -> str:
        return f"Vocab(size={len(self)})"


@dataclass(frozen=True)
class Corpus:
    """A tokenised corpus: 1-D int64 id tensors per split and the vocabulary.

    ``rule`` says in words how the splits were made; reports quote it.
    """

    name: str
    vocab: Vocab
    train: Tensor
    valid: Tensor
    test: Tensor
    level: str
    rule: str

    def unk_rate(self, split: str = "valid") -> float:
        """Share of ``split``'s tokens that are ``<unk>``."""
        ids = getattr(self, split)
        return float((ids == 0).float().mean()) if len(ids) else 0.0

    def truncated(self, n_train: int, n_eval: int | None = None) -> Corpus:
        """The first ``n_train`` training and ``n_eval`` valid/test tokens
        (the vocabulary is unchanged)."""
        n_eval = n_train if n_eval is None else n_eval
        return Corpus(
            name=self.name,
            vocab=self.vocab,
            train=self.train[:n_train],
            valid=self.valid[:n_eval],
            test=self.test[:n_eval],
            level=self.level,
            rule=f"{self.rule}; truncated to the first {n_train:,} train and "
            f"{n_eval:,} valid/test tokens",
        )


def find_split_files(folder: Path | str) -> dict[str, Path] | None:
    """The train/valid/test files of a split folder, or ``None`` if it has none.

    Raises:
        ValueError: only some splits are present, or one split matches two
            files; the message lists what was found.
    """
    folder = Path(folder)
    found: dict[str, list[Path]] = {}
    for split in _SPLITS:
        hits: list[Path] = []
        for alias in _SPLIT_ALIASES[split]:
            for pattern in (f"{alias}.txt", f"*.{alias}.txt", f"*.{alias}.tokens"):
                hits.extend(p for p in folder.glob(pattern) if p.is_file())
        found[split] = sorted(set(hits))
    if not any(found.values()):
        return None
    for hits in found.values():
        if len(hits) != 1:
            listing = {s: [h.name for h in v] for s, v in found.items()}
            raise ValueError(
                f"{folder}: a split folder needs exactly one file per split; "
                f"found {listing}. Rename the files to train.txt, valid.txt and "
                "test.txt"
            )
    return {split: hits[0] for split, hits in found.items()}


def _check_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    if len(fractions) != 3 or any(not 0.0 < f < 1.0 for f in fractions):
        raise ValueError(
            f"fractions must be three numbers in (0, 1) for train, valid and "
            f"test, got {tuple(fractions)!r}"
        )
    if abs(sum(fractions) - 1.0) > 1e-9:
        raise ValueError(f"fractions must sum to 1, got {sum(fractions):g}")
    return (float(fractions[0]), float(fractions[1]), float(fractions[2]))


def load_corpus(
    path: Path | str,
    *,
    level: str = "word",
    tokenizer: str = "whitespace",
    lower: bool = False,
    min_freq: int = 1,
    max_vocab: int | None = None,
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
    pattern: str = "*.txt",
    name: str | None = None,
) -> Corpus:
    """Read a split folder or a folder of text files into a :class:`Corpus`.

    Args:
        path: the folder (see the module docstring for the two layouts).
        level: ``"word"`` or ``"char"``.
        tokenizer: word tokenizer, ``"whitespace"`` or ``"words"``.
        lower: lower-case the text.
        min_freq: training-split frequency below which a token is ``<unk>``.
        max_vocab: cap on the vocabulary size (most frequent kept).
        fractions: train/valid/test shares for a folder of plain files.
        pattern: which files of a plain folder to read.
        name: the corpus's name in reports; default the folder's name.

    Raises:
        FileNotFoundError: ``path`` is not a folder or holds no text files.
        ValueError: an empty or non-UTF-8 file, an ambiguous split folder, or
            a split left without tokens.
    """
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(
            f"corpus folder {str(folder)!r} does not exist or is not a folder"
        )
    opts = {"level": level, "tokenizer": tokenizer, "lower": lower}
    splits = find_split_files(folder)
    streams: dict[str, list[str]] = {s: [] for s in _SPLITS}
    if splits is not None:
        for split, file in splits.items():
            streams[split] = tokenize(read_text_file(file), **opts)
        rule = f"split files {', '.join(p.name for p in splits.values())}"
    else:
        files = sorted(p for p in folder.glob(pattern) if p.is_file())
        if not files:
            raise FileNotFoundError(
                f"{folder}: no train/valid/test files and no files matching "
                f"{pattern!r}; give a WikiText/PTB-style folder or a folder of "
                ".txt files"
            )
        f_train, f_valid, _ = _check_fractions(fractions)
        for file in files:
            tokens = tokenize(read_text_file(file), **opts)
            a = int(round(len(tokens) * f_train))
            b = int(round(len(tokens) * (f_train + f_valid)))
            streams["train"] += tokens[:a]
            streams["valid"] += tokens[a:b]
            streams["test"] += tokens[b:]
        rule = (
            f"{len(files)} files in name order, each cut into contiguous "
            f"{f_train:.0%}/{f_valid:.0%}/{1 - f_train - f_valid:.0%} "
            "train/valid/test pieces"
        )
    for split, tokens in streams.items():
        if not tokens:
            raise ValueError(f"{folder}: the {split} split has no tokens")
    vocab = Vocab.from_tokens(
        streams["train"],
        min_freq=min_freq,
        max_size=max_vocab,
        specials=(EOS,) if level == "word" else (),
    )
    corpus = Corpus(
        name=name or folder.name,
        vocab=vocab,
        train=vocab.encode(streams["train"]),
        valid=vocab.encode(streams["valid"]),
        test=vocab.encode(streams["test"]),
        level=level,
        rule=rule,
    )
    log.info(
        "%s: %d train / %d valid / %d test tokens, vocabulary %d (%s)",
        corpus.name,
        len(corpus.train),
        len(corpus.valid),
        len(corpus.test),
        len(vocab),
        rule,
    )
    return corpus


def batchify(ids: Tensor, batch_size: int) -> Tensor:
    """Cut a 1-D id stream into ``batch_size`` parallel streams: shape (T, B).

    Column ``j`` is ``ids[j*T:(j+1)*T]`` with ``T = len(ids) // batch_size``;
    the last ``len(ids) % batch_size`` tokens are dropped.

    Raises:
        ValueError: fewer than two tokens per stream (no input/target pair).
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int):
        raise TypeError(f"batch_size must be an integer, got {batch_size!r}")
    if ids.dim() != 1:
        raise ValueError(
            f"batchify needs a 1-D id tensor, got shape {tuple(ids.shape)}"
        )
    steps = len(ids) // batch_size if batch_size > 0 else 0
    if steps < 2:
        raise ValueError(
            f"batch_size {batch_size} leaves {steps} tokens per stream from "
            f"{len(ids)} tokens; use a smaller batch_size or more text"
        )
    # (B, T) row-major cut, then transpose to time-major (T, B).
    return ids[: steps * batch_size].view(batch_size, steps).t().contiguous()


def bptt_windows(
    data: Tensor,
    bptt: int,
    *,
    variable: bool = False,
    generator: torch.Generator | None = None,
    min_len: int = 5,
) -> Iterator[tuple[Tensor, Tensor]]:
    """Consecutive (input, target) windows over batched data of shape (T, B).

    Each window is ``x = data[i:i+L]`` and ``y = data[i+1:i+1+L]``, so the
    windows tile the stream once. With ``variable=True`` the length varies
    as in AWD-LSTM training: a base of ``bptt`` with probability 0.95 and
    ``bptt / 2`` otherwise, then ``L ~ round(N(base, 5))``, at least
    ``min_len``; callers rescale the learning rate by ``L / bptt``.
    """
    if isinstance(bptt, bool) or not isinstance(bptt, int) or bptt < 1:
        raise ValueError(f"bptt must be a positive integer, got {bptt!r}")
    i, total = 0, data.shape[0] - 1
    while i < total:
        length = bptt
        if variable:
            u, z = torch.rand(2, generator=generator)
            base = bptt if float(u) < 0.95 else bptt / 2
            # z is uniform; turn it into a normal deviate with the inverse CDF.
            dev = float(torch.special.ndtri(z.clamp(1e-7, 1 - 1e-7)))
            length = max(min_len, int(round(base + 5.0 * dev)))
        length = min(length, total - i)
        yield data[i : i + length], data[i + 1 : i + 1 + length]
        i += length
