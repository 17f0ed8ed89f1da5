"""Training speed of dropscale's AWD-LSTM against fastai's ``AWD_LSTM``.

Both language models get the same sizes (vocabulary, embedding, hidden, layers),
the same five drop probabilities, tied weights, the same batch of random token
ids and the same training step: forward, cross-entropy, backward, gradient
clipping at 0.25, one SGD step. The two sides alternate step by step in one
process, so background load hits both alike; the figure reported is the median
step time of each side, as training tokens per second, and their ratio
(dropscale / fastai; 1.0 is parity, above 1 dropscale is faster).

Needs fastai beside torch 2.13.0 (install it with a constraints file that pins
``torch==2.13.0``). Run:

    OMP_NUM_THREADS=1 python benchmarks/bench_awd_lstm.py
    OMP_NUM_THREADS=1 python benchmarks/bench_awd_lstm.py --vocab 10000 \
        --emb 200 --hidden 400 --layers 3 --steps 20
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from dropscale.models.awd_lstm import AWDLSTM

SITES_P = {"embed": 0.1, "input": 0.4, "hidden": 0.25, "output": 0.4, "weight": 0.5}


def build_fastai(args: argparse.Namespace):
    from fastai.text.models.awdlstm import AWD_LSTM
    from fastai.text.models.core import get_language_model

    config = {
        "emb_sz": args.emb,
        "n_hid": args.hidden,
        "n_layers": args.layers,
        "pad_token": 1,
        "bidir": False,
        "embed_p": SITES_P["embed"],
        "input_p": SITES_P["input"],
        "hidden_p": SITES_P["hidden"],
        "weight_p": SITES_P["weight"],
        "output_p": SITES_P["output"],
        "tie_weights": True,
        "out_bias": True,
    }
    return get_language_model(AWD_LSTM, args.vocab, config=config)


def build_dropscale(args: argparse.Namespace) -> AWDLSTM:
    return AWDLSTM(
        args.vocab,
        emb_size=args.emb,
        hidden_size=args.hidden,
        n_layers=args.layers,
        p=SITES_P,
        scaling="inverted",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vocab", type=int, default=2000)
    parser.add_argument("--emb", type=int, default=64)
    parser.add_argument("--hidden", type=int, default=192)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--bptt", type=int, default=35)
    parser.add_argument("--steps", type=int, default=30, help="timed steps per side")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    ours = build_dropscale(args).train()
    theirs = build_fastai(args).train()
    n_ours = sum(p.numel() for p in ours.parameters())
    n_theirs = sum(p.numel() for p in theirs.parameters())
    tokens = torch.randint(0, args.vocab, (args.bptt + 1, args.batch))
    x_tm, y_tm = tokens[:-1], tokens[1:]  # (T, B) for dropscale
    x_bf, y_bf = x_tm.t().contiguous(), y_tm.t().contiguous()  # (B, T) for fastai
    opt_ours = torch.optim.SGD(ours.parameters(), lr=1.0)
    opt_theirs = torch.optim.SGD(theirs.parameters(), lr=1.0)
    state = {"hidden": None}

    def step_ours() -> None:
        hidden = state["hidden"]
        if hidden is not None:
            hidden = [(h.detach(), c.detach()) for h, c in hidden]
        logits, state["hidden"] = ours(x_tm, hidden)
        loss = F.cross_entropy(logits.flatten(0, 1), y_tm.flatten())
        opt_ours.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(ours.parameters(), 0.25)
        opt_ours.step()

    def step_theirs() -> None:
        logits = theirs(x_bf)[0]  # fastai keeps and detaches its own state
        loss = F.cross_entropy(logits.flatten(0, 1), y_bf.flatten())
        opt_theirs.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(theirs.parameters(), 0.25)
        opt_theirs.step()

    for _ in range(3):  # warm-up
        step_ours()
        step_theirs()
    times: dict[str, list[float]] = {"dropscale": [], "fastai": []}
    for i in range(args.steps):
        order = [("dropscale", step_ours), ("fastai", step_theirs)]
        for name, fn in order if i % 2 == 0 else order[::-1]:
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    per_step = args.bptt * args.batch
    rate = {k: per_step / statistics.median(v) for k, v in times.items()}
    print(
        f"AWD-LSTM training step: vocab {args.vocab}, emb {args.emb}, hidden "
        f"{args.hidden}, {args.layers} layers, batch {args.batch} x bptt "
        f"{args.bptt}, {args.threads} thread(s), {args.steps} steps per side"
    )
    print(f"parameters: dropscale {n_ours:,}, fastai {n_theirs:,}")
    for name, r in rate.items():
        spread = statistics.quantiles(times[name], n=4)
        print(
            f"{name:<10} {r:>10,.0f} tokens/s  (median step "
            f"{statistics.median(times[name]) * 1e3:.1f} ms, quartiles "
            f"{spread[0] * 1e3:.1f}-{spread[2] * 1e3:.1f} ms)"
        )
    print(f"ratio dropscale / fastai: {rate['dropscale'] / rate['fastai']:.3f}")


if __name__ == "__main__":
    main()
