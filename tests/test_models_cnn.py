"""The small CNN: shapes, channel dropout wiring, eval factors, learning."""

from __future__ import annotations

import math

import pytest
import torch

from dropscale.layers import Dropout
from dropscale.models.cnn import CNN


def sites(model: CNN) -> list[Dropout]:
    return [m for m in model.modules() if isinstance(m, Dropout)]


def capture(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    seen: dict[str, torch.Tensor] = {}

    def hook(_m, inputs, output):
        seen["x"], seen["y"] = inputs[0].detach(), output.detach()

    module.register_forward_hook(hook)
    return seen


def test_shapes_and_flat_equals_image_input():
    torch.manual_seed(0)
    model = CNN((1, 28, 28), 10, p=0.3, scaling="classic").eval()
    x = torch.randn(5, 784)
    out = model(x)
    assert out.shape == (5, 10)
    assert torch.equal(out, model(x.view(5, 1, 28, 28)))
    kinds = [(s.p, s.scaling.name, s.shared_dims) for s in sites(model)]
    assert kinds == [(0.3, "classic", (2, 3))] * 2 + [(0.3, "classic", ())]


def test_one_decision_per_channel_map():
    # p = 0.5, inverted: a = 2. Every (image, channel) map of the first site's
    # output is either all zero or exactly 2x its input.
    torch.manual_seed(1)
    model = CNN((1, 16, 16), 4, channels=(32,), p=0.5).train()
    seen = capture(sites(model)[0])
    kept = total = 0
    for _ in range(20):
        model(torch.randn(32, 256))
        x, y = seen["x"], seen["y"]  # (N, C, 8, 8)
        live = x.abs().amax(dim=(2, 3)) > 0
        zero = (y == 0).all(dim=(2, 3))
        doubled = (y == 2 * x).all(dim=(2, 3))
        assert bool((zero | doubled).all())
        kept += int((doubled & ~zero & live).sum())
        total += int(live.sum())
    # Binomial(total, 0.5): 5 standard errors, false alarm about 6e-7.
    assert abs(kept / total - 0.5) < 5 * math.sqrt(0.25 / total), kept / total


def test_eval_applies_the_inference_factor_at_every_site():
    torch.manual_seed(2)
    model = CNN((1, 8, 8), 3, channels=(4,), hidden=6, p=0.25, scaling="classic")
    model.eval()
    seen = [capture(s) for s in sites(model)]
    model(torch.randn(3, 64))
    for s in seen:  # classic: b = q = 0.75
        torch.testing.assert_close(s["y"], 0.75 * s["x"])


def test_bad_arguments_and_inputs():
    with pytest.raises(ValueError, match="image_shape must be"):
        CNN((28, 28), 10, p=0.1)
    with pytest.raises(ValueError, match="use at most 2 blocks"):
        CNN((1, 4, 4), 10, channels=(2, 2, 2), p=0.1)
    with pytest.raises(ValueError, match="channels must be positive"):
        CNN((1, 8, 8), 10, channels=(), p=0.1)
    model = CNN((1, 8, 8), 10, channels=(2,), p=0.1)
    with pytest.raises(ValueError, match=r"expects inputs \(N, 64\)"):
        model(torch.randn(2, 63))


def test_learns_a_spatial_task():
    # Class = which half of an 8x8 image holds a bright 2x2 blob; a CNN with
    # channel dropout must learn it (chance is 50 %).
    gen = torch.Generator().manual_seed(3)
    n = 256
    x = 0.3 * torch.randn(n, 1, 8, 8, generator=gen)
    y = torch.randint(0, 2, (n,), generator=gen)
    rows = torch.randint(0, 7, (n,), generator=gen)
    cols = torch.randint(0, 3, (n,), generator=gen) + 4 * y
    for i in range(n):
        x[i, 0, rows[i] : rows[i] + 2, cols[i] : cols[i] + 2] += 2.0
    torch.manual_seed(4)
    model = CNN((1, 8, 8), 2, channels=(8,), hidden=16, p=0.2)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(60):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    model.eval()
    accuracy = float((model(x).argmax(1) == y).float().mean())
    assert accuracy > 0.95, accuracy
