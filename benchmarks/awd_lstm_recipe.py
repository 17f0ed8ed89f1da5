"""The AWD-LSTM recipe on real text under each rescaling rule, with perplexities.

Where the ``awd-lstm`` presets train through the study engine (independent
windows, Adam), this script uses :func:`dropscale.models.train_language_model`:
the hidden state carried across windows, variable BPTT lengths, gradient
clipping and SGD with non-monotonically triggered averaging. Every rule gets
the same initial weights, windows and mask streams (one seed), so the
perplexities differ by the rule alone. It prints one line per rule with the
validation and test perplexity of the kept weights and the training speed.

The corpus is the Shakespeare texts of the data cache (fetch them once with
``dropscale data get shakespeare``) or any folder given with ``--data-dir``.

    OMP_NUM_THREADS=1 python benchmarks/awd_lstm_recipe.py
"""

from __future__ import annotations

import argparse
import logging
import time

import torch

from dropscale.data import load_corpus, shakespeare_dir
from dropscale.models import AWDLSTM, LMTrainConfig, train_language_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=None, help="corpus folder")
    parser.add_argument("--max-vocab", type=int, default=3000)
    parser.add_argument("--train-tokens", type=int, default=200_000)
    parser.add_argument("--eval-tokens", type=int, default=20_000)
    parser.add_argument("--emb", type=int, default=64)
    parser.add_argument("--hidden", type=int, default=192)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--drop-mult", type=float, default=0.5)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--optimizer", choices=("sgd", "adam"), default="sgd")
    parser.add_argument("--lr", type=float, default=30.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--scaling", nargs="+", default=["inverted", "classic", "variance", "none"]
    )
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)
    torch.set_num_threads(1)

    corpus = load_corpus(
        args.data_dir or shakespeare_dir(),
        tokenizer="words",
        lower=True,
        min_freq=3,
        max_vocab=args.max_vocab,
    ).truncated(args.train_tokens, args.eval_tokens)
    config = LMTrainConfig(
        epochs=args.epochs,
        optimizer=args.optimizer,
        lr=args.lr,
        eval_every=100,
        seed=args.seed,
    )
    print(
        f"{corpus.name}: {len(corpus.train):,} train / {len(corpus.valid):,} valid / "
        f"{len(corpus.test):,} test tokens, vocabulary {len(corpus.vocab):,} "
        f"(<unk> {corpus.unk_rate('test'):.1%} of test); {corpus.rule}"
    )
    print(
        f"model emb {args.emb}, hidden {args.hidden}, {args.layers} layers, "
        f"drop_mult {args.drop_mult}; {config}"
    )
    for scaling in args.scaling:
        torch.manual_seed(args.seed)
        model = AWDLSTM(
            len(corpus.vocab),
            emb_size=args.emb,
            hidden_size=args.hidden,
            n_layers=args.layers,
            drop_mult=args.drop_mult,
            scaling=scaling,
        )
        start = time.perf_counter()
        result = train_language_model(model, corpus, config)
        wall = time.perf_counter() - start
        avg = (
            "never"
            if result.averaged_from_step is None
            else f"from step {result.averaged_from_step}"
        )
        print(
            f"{scaling:<10} val ppl {result.val_ppl:8.2f}  test ppl "
            f"{result.test_ppl:8.2f}  {result.tokens_per_second:7,.0f} tokens/s  "
            f"averaging {avg}  ({result.steps} steps, {wall:.0f} s)"
        )


if __name__ == "__main__":
    main()
