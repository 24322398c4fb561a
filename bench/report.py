"""The shared ``docs/benchmarks.md``: each benchmark owns one ``## <title>`` section and replaces only it."""

from __future__ import annotations

from pathlib import Path

BENCHMARKS_MD = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"


def replace_section(body: str, path: Path = BENCHMARKS_MD) -> None:
    """Replace the section whose heading is ``body``'s first line (or append it), keeping every other section.

    ``body`` must start with ``## <title>``; the section runs to the next ``## `` heading.
    """
    heading = body.splitlines()[0].strip() if body else ""
    if not heading.startswith("## "):
        raise ValueError(f"a benchmarks section must start with '## <title>', got {heading!r}")
    body = body.rstrip("\n") + "\n"
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    lines = text.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if line.strip() == heading), None)
    if start is None:
        new = text.rstrip("\n") + "\n\n" + body
    else:
        stop = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
        rest = "".join(lines[stop:])
        new = "".join(lines[:start]) + body + ("\n" + rest if rest else "")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(new, encoding="utf-8")
