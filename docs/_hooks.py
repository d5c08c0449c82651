"""MkDocs hook: the table of a tuning run's options, made from ``bstune.options.TuneOptions``.

A page that holds the line ``<!-- bstune:tune-options -->`` gets, in its place, one row per field:
the command-line flag, the keyword of ``bstune.tune`` with its default, the commands that take it
and the help text, all read from the field, so the page cannot drift from the code.
"""

from __future__ import annotations

import dataclasses
from typing import Any

MARKER = "<!-- bstune:tune-options -->"


def options_table() -> str:
    from bstune.options import TuneOptions

    rows = ["| option | `tune()` keyword and default | commands | what it does |", "|---|---|---|---|"]
    for f in dataclasses.fields(TuneOptions):
        meta = f.metadata
        flag = " / ".join(f"`{x}`" for x in meta["flag"].split("/")) if meta["flag"] else "(none)"
        commands = ", ".join(meta["commands"]) or "(set by `bstune study-batch`)"
        what = meta["help"] or "`\"batch\"`: the batch-size study after the search (what `bstune study-batch` runs)"
        rows.append(f"| {flag} | `{f.name}={f.default!r}` | {commands} | {what.replace('|', '&#124;')} |")
    return "\n".join(rows) + "\n"


def on_page_markdown(markdown: str, **_: Any) -> str:
    return markdown.replace(MARKER, options_table()) if MARKER in markdown else markdown
