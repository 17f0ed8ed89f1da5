"""Render report blocks as one self-contained HTML page.

Images are embedded as base64 ``data:`` URIs, so the page can be mailed or
archived alone; every string is HTML-escaped before the only markup the
blocks carry (``**bold**``) is turned into ``<strong>``.
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Sequence
from pathlib import Path

from dropscale.report.content import Block

__all__ = ["to_html"]

_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 62rem; margin: 2rem auto;
       padding: 0 1rem; line-height: 1.45; color: #222; }
table { border-collapse: collapse; margin: 0.5rem 0 1rem; font-size: 0.9rem; }
th, td { border: 1px solid #ccc; padding: 0.2rem 0.5rem; text-align: left; }
th { background: #f2f2f2; }
img { max-width: 100%; }
"""

_BOLD = re.compile(r"\*\*(.+?)\*\*")


def _text(s: object) -> str:
    return _BOLD.sub(r"<strong>\1</strong>", html.escape(str(s)))


def to_html(
    blocks: Sequence[Block], folder: Path, title: str = "dropscale study"
) -> str:
    """The blocks as HTML; ``("img", alt, name)`` embeds ``folder / name``."""
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>",
    ]
    for block in blocks:
        kind = block[0]
        if kind in ("h1", "h2"):
            out.append(f"<{kind}>{_text(block[1])}</{kind}>")
        elif kind == "p":
            out.append(f"<p>{_text(block[1])}</p>")
        elif kind == "ul":
            out.append(
                "<ul>" + "".join(f"<li>{_text(i)}</li>" for i in block[1]) + "</ul>"
            )
        elif kind == "table":
            head = "".join(f"<th>{_text(h)}</th>" for h in block[1])
            body = "".join(
                "<tr>" + "".join(f"<td>{_text(c)}</td>" for c in row) + "</tr>"
                for row in block[2]
            )
            out.append(
                f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
            )
        elif kind == "img":
            data = base64.b64encode((Path(folder) / block[2]).read_bytes()).decode()
            out.append(
                f'<p><img alt="{html.escape(str(block[1]))}" '
                f'src="data:image/png;base64,{data}"></p>'
            )
        else:
            raise ValueError(f"report: unknown block kind {kind!r}")
    out.append("</body></html>")
    return "\n".join(out) + "\n"
