"""Links between the project's pages resolve: every relative link of README.md, CONTRIBUTING.md and docs/*.md,
and every ``docs/<page>.md#anchor`` a config or module comment cites, names a file that exists and, with an
anchor, a heading of that page (GitHub's rule: lower case, punctuation but ``-`` and ``_`` dropped, spaces to ``-``).
Headings get renamed as results come in; a stale anchor only lands a reader at the top of a long page."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", REPO / "CONTRIBUTING.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")
CITED = re.compile(r"docs/([\w-]+\.md)#([\w-]+)")


def slug(heading: str) -> str:
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """The anchors of a page's headings, fenced code skipped (a ``# comment`` in a bash block is no heading)."""
    found, seen, fenced = set(), {}, False
    for line in page.read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        match = re.match(r"#{1,6} (.+)", line)
        if match and not fenced:
            base = slug(match.group(1))
            n = seen.get(base, 0)
            seen[base] = n + 1
            found.add(base if n == 0 else f"{base}-{n}")
    return found


def test_slug_follows_githubs_rule():
    assert slug("Recording conditions: what a user's recording costs (zoo 0.3)") == \
        "recording-conditions-what-a-users-recording-costs-zoo-03"
    assert slug("Spoken-digit data: `SpokenDigits` (`datamodules/spoken_digits.py`)") == \
        "spoken-digit-data-spokendigits-datamodulesspoken_digitspy"


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_every_relative_link_of_a_page_resolves(page):
    broken = []
    for target in LINK.findall(page.read_text(encoding="utf-8")):
        if re.match(r"[a-z]+:", target):  # http(s):, mailto:
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{target}: no file {file}")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(f"{target}: no heading with anchor #{anchor} in {file.name}")
    assert not broken, "\n".join(broken)


def test_anchors_cited_in_configs_and_code_exist():
    sources = [*(REPO / "configs").rglob("*.yaml"), *(REPO / "datamodules").glob("*.py"), *(REPO / "zoo").rglob("*.py"),
               *(REPO / "benchmarks").glob("*.py")]
    broken = [f"{src.relative_to(REPO)}: docs/{page}#{anchor}"
              for src in sources for page, anchor in CITED.findall(src.read_text(encoding="utf-8"))
              if not (REPO / "docs" / page).exists() or anchor not in anchors(REPO / "docs" / page)]
    assert not broken, "\n".join(broken)
