"""The report: self-contained HTML with every user string escaped, the same
content as the Markdown, every section present."""

from __future__ import annotations

import re

from dropscale.report.content import study_blocks
from dropscale.report.html import to_html
from dropscale.report.markdown import to_markdown
from dropscale.study import StudyConfig, run_study
from dropscale.study.ledger import Ledger
from dropscale.study.rows import ledger_rows

EVIL = "<script>alert('x')</script> & **bold** | pipe"


def test_html_is_self_contained_and_escaped(tmp_path):
    config = StudyConfig(
        description=EVIL,
        scalings=("inverted", "variance"),
        ps=(0.3,),
        seeds=2,
        epochs=1,
        model_options={"hidden": [8]},
        mc_samples=(1, 3),
        calibration_examples=32,
    )
    out = run_study(config, tmp_path)
    html = out.report_html.read_text()
    assert "<script" not in html
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp;" in html
    # every image is inline; no reference to a file next to the page
    srcs = re.findall(r'src="([^"]*)"', html)
    assert len(srcs) == 4 and all(s.startswith("data:image/png;base64,") for s in srcs)
    md = out.report_md.read_text()
    for section in (
        "## Study definition",
        "## Verdict: which rule gives the better model",
        "## Mean or spread?",
        "## Accuracy and NLL against p",
        "## Eval-scale sweep",
        "## Monte-Carlo dropout",
        "## Train vs inference activations per dropout site",
        "## Run time",
    ):
        assert section in md
        assert section[3:] in html
    assert "trials per minute" in md and "preliminary" in md
    # nor can the Markdown carry raw HTML from a user string
    assert "<script" not in md and "&lt;script&gt;" in md


def test_markdown_and_html_render_the_same_blocks(tmp_path):
    blocks = [
        ("h1", "T"),
        ("p", "a **b** <c>"),
        ("ul", ["x & y"]),
        ("table", ["h|1", "h2"], [["1", "<2>"]]),
    ]
    md = to_markdown(blocks)
    assert md.splitlines()[:3] == ["# T", "", "a **b** &lt;c&gt;"]
    assert "| h\\|1 | h2 |" in md and "| 1 | &lt;2&gt; |" in md
    assert "- x &amp; y" in md
    html = to_html(blocks, tmp_path)
    assert "<p>a <strong>b</strong> &lt;c&gt;</p>" in html
    assert "<li>x &amp; y</li>" in html and "<td>&lt;2&gt;</td>" in html


def test_blocks_come_from_the_ledger_rows_alone(tmp_path):
    config = StudyConfig(
        scalings=("inverted",),
        ps=(0.5,),
        seeds=1,
        epochs=1,
        model_options={"hidden": [8]},
        mc_samples=(1,),
        calibration_examples=16,
    )
    run_study(config, tmp_path)
    with Ledger(tmp_path) as ledger:
        rows = ledger_rows(ledger.results(), ledger.definition())
    blocks = study_blocks(
        rows, config.definition(), wall_seconds=60.0, group_seconds=1.0, figures={}
    )
    text = to_markdown(blocks)
    assert "wall time 60.0 s for 1 trial (1.0 trials per minute" in text
    assert "With 1 seed this verdict is preliminary" in text
    acc = rows[0]["accuracy"] * 100
    assert f"| inverted | 0.5 | {acc:.2f} (1 seed, no interval) |" in text
    assert not re.search(r"\binf\b", text)
