"""Render report blocks (see :mod:`dropscale.report.content`) as Markdown.

``<``, ``>`` and ``&`` are written as entities, so a user string cannot
inject HTML into a Markdown viewer; ``|`` is escaped inside table cells.
"""

from __future__ import annotations

from collections.abc import Sequence

from dropscale.report.content import Block

__all__ = ["to_markdown"]


def _t(text: object) -> str:
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _cell(text: object) -> str:
    return _t(text).replace("|", "\\|").replace("\n", " ")


def to_markdown(blocks: Sequence[Block]) -> str:
    """The blocks as one Markdown document; images are referenced by file name."""
    out: list[str] = []
    for block in blocks:
        kind = block[0]
        if kind == "h1":
            out += [f"# {_t(block[1])}", ""]
        elif kind == "h2":
            out += [f"## {_t(block[1])}", ""]
        elif kind == "p":
            out += [_t(block[1]), ""]
        elif kind == "ul":
            out += [f"- {_t(item)}" for item in block[1]] + [""]
        elif kind == "table":
            header, rows = block[1], block[2]
            out.append("| " + " | ".join(_cell(h) for h in header) + " |")
            out.append("| " + " | ".join("---" for _ in header) + " |")
            out += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
            out.append("")
        elif kind == "img":
            out += [f"![{_t(block[1])}]({block[2]})", ""]
        else:
            raise ValueError(f"report: unknown block kind {kind!r}")
    return "\n".join(out)
