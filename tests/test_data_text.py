"""Text corpora: reading, tokens, vocabulary, split rules, batches, BPTT windows."""

from __future__ import annotations

import math

import pytest
import torch

from dropscale.data.text import (
    EOS,
    UNK,
    Vocab,
    batchify,
    bptt_windows,
    load_corpus,
    read_text_file,
    tokenize,
)

# ------------------------------------------------------------------ reading


def test_read_rejects_empty_whitespace_and_non_utf8(tmp_path):
    (tmp_path / "empty.txt").write_bytes(b"")
    with pytest.raises(ValueError, match=r"empty\.txt: the file is empty"):
        read_text_file(tmp_path / "empty.txt")
    (tmp_path / "blank.txt").write_bytes(b" \n\t\n")
    with pytest.raises(ValueError, match="only whitespace"):
        read_text_file(tmp_path / "blank.txt")
    (tmp_path / "latin.txt").write_bytes(b"caf\xe9 au lait")
    with pytest.raises(ValueError, match=r"latin\.txt: not UTF-8.*0xe9 at offset 3"):
        read_text_file(tmp_path / "latin.txt")
    (tmp_path / "bom.txt").write_bytes(b"\xef\xbb\xbfhello")
    assert read_text_file(tmp_path / "bom.txt") == "hello"


# ----------------------------------------------------------------- tokenize


def test_word_tokens_skip_blank_lines_and_end_with_eos():
    text = "the cat\n\n  sat  down\n"
    assert tokenize(text) == ["the", "cat", EOS, "sat", "down", EOS]


def test_words_tokenizer_splits_punctuation_keeps_inner_apostrophes():
    text = "O'er the hill, 'tis DONE!"
    assert tokenize(text, tokenizer="words", lower=True) == [
        "o'er", "the", "hill", ",", "'", "tis", "done", "!", EOS,
    ]  # fmt: skip


def test_char_tokens_keep_newlines_and_errors():
    assert tokenize("ab\nc", level="char") == ["a", "b", "\n", "c"]
    with pytest.raises(ValueError, match="level must be 'word' or 'char'"):
        tokenize("x", level="byte")
    with pytest.raises(ValueError, match="tokenizer must be"):
        tokenize("x", tokenizer="bpe")


# -------------------------------------------------------------------- vocab


def test_vocab_frequency_cut_off_and_order():
    tokens = ["a", "b", "a", "c", "a", "b", "d"]
    vocab = Vocab.from_tokens(tokens, min_freq=2)
    assert vocab.itos == (UNK, EOS, "a", "b")
    assert vocab.encode(["a", "c", "zzz", EOS]).tolist() == [2, 0, 0, 1]
    assert vocab.decode([3, 0]) == ["b", UNK]
    assert Vocab.from_tokens(tokens, max_size=3).itos == (UNK, EOS, "a")
    with pytest.raises(ValueError, match="min_freq must be a positive integer"):
        Vocab.from_tokens(tokens, min_freq=0)
    with pytest.raises(ValueError, match="max_size must be at least 2"):
        Vocab.from_tokens(tokens, max_size=1)
    with pytest.raises(ValueError, match="starts with '<unk>'"):
        Vocab(["a"])


# ------------------------------------------------------------------ corpora


def test_split_folder_builds_vocab_from_train_only(tmp_path):
    (tmp_path / "train.txt").write_text("a b a\nb c\n")
    (tmp_path / "valid.txt").write_text("a z\n")
    (tmp_path / "test.txt").write_text("c a\n")
    corpus = load_corpus(tmp_path)
    v = corpus.vocab
    assert v.decode(corpus.train) == ["a", "b", "a", EOS, "b", "c", EOS]
    assert corpus.valid.tolist() == [v.stoi["a"], 0, v.stoi[EOS]]
    assert corpus.unk_rate("valid") == pytest.approx(1 / 3)
    assert "z" not in v.stoi and corpus.rule.startswith("split files")


def test_ptb_and_wikitext_names_are_found(tmp_path):
    for split in ("train", "valid", "test"):
        (tmp_path / f"ptb.{split}.txt").write_text(f"{split} words\n")
    corpus = load_corpus(tmp_path)
    assert corpus.vocab.decode(corpus.test) == [UNK, "words", EOS]
    wiki = tmp_path / "wiki"
    wiki.mkdir()
    for split in ("train", "valid", "test"):
        (wiki / f"wiki.{split}.tokens").write_text(f" = {split} = \n")
    assert len(load_corpus(wiki).train) == 4


def test_ambiguous_or_partial_split_folder_is_an_error(tmp_path):
    (tmp_path / "train.txt").write_text("a\n")
    (tmp_path / "valid.txt").write_text("a\n")
    with pytest.raises(ValueError, match="exactly one file per split.*'test': \\[\\]"):
        load_corpus(tmp_path)
    (tmp_path / "test.txt").write_text("a\n")
    (tmp_path / "x.train.txt").write_text("a\n")
    with pytest.raises(ValueError, match="exactly one file per split"):
        load_corpus(tmp_path)


def test_plain_folder_split_rule_per_file(tmp_path):
    # Character level makes the token counts exact: 10 and 20 tokens.
    (tmp_path / "a.txt").write_text("abcdefghij")  # 10 chars: 8 / 1 / 1
    (tmp_path / "b.txt").write_text("KLMNOPQRSTUVWXYZ0123")  # 20 chars: 16 / 2 / 2
    corpus = load_corpus(tmp_path, level="char")
    dec = corpus.vocab.decode
    assert "".join(dec(corpus.train)) == "abcdefgh" + "KLMNOPQRSTUVWXYZ"
    assert "".join(dec(corpus.valid)) == UNK + UNK + UNK
    assert corpus.test.tolist() == [0, 0, 0]
    assert "2 files in name order" in corpus.rule and "80%/10%/10%" in corpus.rule
    other = load_corpus(tmp_path, level="char", fractions=(0.5, 0.3, 0.2))
    assert len(other.train) == 5 + 10 and len(other.valid) == 3 + 6
    assert len(other.test) == 2 + 4


def test_plain_folder_errors_name_the_file(tmp_path):
    (tmp_path / "good.txt").write_text("some words here\n" * 10)
    (tmp_path / "bad.txt").write_bytes(b"\xff\xfe")
    with pytest.raises(ValueError, match=r"bad\.txt: not UTF-8"):
        load_corpus(tmp_path)
    (tmp_path / "bad.txt").write_bytes(b"")
    with pytest.raises(ValueError, match=r"bad\.txt: the file is empty"):
        load_corpus(tmp_path)
    (tmp_path / "bad.txt").unlink()
    with pytest.raises(ValueError, match="fractions must sum to 1"):
        load_corpus(tmp_path, fractions=(0.5, 0.2, 0.2))
    with pytest.raises(FileNotFoundError, match="no train/valid/test files"):
        load_corpus(tmp_path, pattern="*.md")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_corpus(tmp_path / "missing")


# ---------------------------------------------------------- batch and BPTT


def test_batchify_columns_are_contiguous_streams():
    out = batchify(torch.arange(11), 3)
    assert out.shape == (3, 3)
    assert out[:, 0].tolist() == [0, 1, 2]
    assert out[:, 2].tolist() == [6, 7, 8]
    with pytest.raises(ValueError, match="leaves 1 tokens per stream"):
        batchify(torch.arange(5), 3)


def test_fixed_windows_tile_the_stream_once():
    data = batchify(torch.arange(103), 1)  # (103, 1)
    windows = list(bptt_windows(data, 10))
    assert [len(x) for x, _ in windows] == [10] * 10 + [2]
    xs = torch.cat([x for x, _ in windows])
    ys = torch.cat([y for _, y in windows])
    assert xs.ravel().tolist() == list(range(102))
    assert ys.ravel().tolist() == list(range(1, 103))
    with pytest.raises(ValueError, match="bptt must be a positive integer"):
        next(bptt_windows(data, 0))


def test_variable_window_lengths_follow_the_awd_lstm_recipe():
    # L = round(N(base, 5)) with base 70 w.p. 0.95 and 35 w.p. 0.05.
    # Mean 0.95*70 + 0.05*35 = 68.25; Var = 25 + 0.95*0.05*35^2 = 83.19 (the
    # rounding adds 1/12 to the variance and nothing to the mean). Tolerances:
    # 5 standard errors, a false alarm about 6e-7 per check.
    gen = torch.Generator().manual_seed(1234)
    data = torch.zeros(700_001, 1, dtype=torch.int64)
    lengths = [len(x) for x, _ in bptt_windows(data, 70, variable=True, generator=gen)]
    lengths = torch.tensor(lengths[:-1], dtype=torch.float64)  # last one is cut
    n = len(lengths)
    sd_mean = math.sqrt(83.19 + 1 / 12) / math.sqrt(n)
    assert abs(float(lengths.mean()) - 68.25) < 5 * sd_mean, float(lengths.mean())
    short = float((lengths < 52.5).double().mean())
    assert abs(short - 0.05) < 5 * math.sqrt(0.05 * 0.95 / n), short
    assert float(lengths.min()) >= 5
