"""The documentation holds together: every relative link and image in README.md and docs/*.md
points at a file that exists and, with a #fragment, at a heading of that page (GitHub's
anchors); and the README's index lists every page in docs/. Plain file reading, no network."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

FENCE = re.compile(r"^(```|~~~)")
HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
CODE_SPAN = re.compile(r"(`+)(.+?)\1", re.DOTALL)
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*:", re.IGNORECASE)


def prose_lines(text: str) -> list[str]:
    """The page's lines outside fenced code blocks (a fenced block is replaced by a blank)."""
    lines, fenced = [], None
    for line in text.splitlines():
        fence = FENCE.match(line.lstrip())
        if fenced:
            if fence and fence.group(1) == fenced:
                fenced = None
            lines.append("")
        elif fence:
            fenced = fence.group(1)
            lines.append("")
        else:
            lines.append(line)
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: the rendered text, lower case, punctuation dropped
    (letters, digits, '_', '-' and spaces stay), spaces as hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link: its text
    text = CODE_SPAN.sub(lambda m: m.group(2).strip(), text)
    text = re.sub(r"<[^>]+>", "", text)  # inline HTML
    return re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    found: set[str] = set()
    seen: dict[str, int] = {}
    for line in prose_lines(page.read_text()):
        match = HEADING.match(line)
        if not match:
            continue
        base = slug(match.group(2))
        n = seen.get(base, 0)
        seen[base] = n + 1
        found.add(base if n == 0 else f"{base}-{n}")
    found.update(re.findall(r"<a\s+(?:name|id)=\"([^\"]+)\"", page.read_text()))
    return found


def links(page: Path) -> list[str]:
    """The targets of the page's links and images, outside code blocks and code spans."""
    prose = CODE_SPAN.sub("", "\n".join(prose_lines(page.read_text())))
    return LINK.findall(prose)


def broken(page: Path) -> list[str]:
    problems = []
    for target in links(page):
        if SCHEME.match(target):
            continue  # http(s), mailto: not checked (no network)
        path_part, _, fragment = target.partition("#")
        dest = (page.parent / path_part).resolve() if path_part else page
        where = f"{page.relative_to(ROOT)}: {target}"
        if not dest.is_relative_to(ROOT) or not dest.exists():
            problems.append(f"{where}: no such file")
        elif fragment and dest.suffix == ".md" and fragment not in anchors(dest):
            problems.append(f"{where}: no heading with that anchor in {dest.relative_to(ROOT)}")
    return problems


def test_the_anchors_are_githubs():
    assert slug("A year of history (`make bench-scale`)") == "a-year-of-history-make-bench-scale"
    assert slug("The talk's demo from the terminal, three ways") == (
        "the-talks-demo-from-the-terminal-three-ways")
    assert slug("Where the time goes (pgbroker at ~7,000 jobs/s)") == (
        "where-the-time-goes-pgbroker-at-7000-jobss")


def test_a_broken_link_is_found(tmp_path, monkeypatch):
    monkeypatch.setattr(f"{__name__}.ROOT", tmp_path)
    (tmp_path / "other.md").write_text("# Other\n\n## A part\n")
    page = tmp_path / "page.md"
    page.write_text("# Page\n\n[ok](other.md#a-part) [gone](missing.md) [bad](other.md#nope)\n"
                    "`[in code](nowhere.md)`\n```\n[in a block](nowhere.md)\n```\n"
                    "[self](#page) [web](https://example.com/x.md)\n")
    assert broken(page) == ["page.md: missing.md: no such file",
                            "page.md: other.md#nope: no heading with that anchor in other.md"]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page):
    assert broken(page) == []


def test_the_readme_lists_every_page_in_docs():
    listed = {(ROOT / target.partition("#")[0]).resolve() for target in links(ROOT / "README.md")
              if not SCHEME.match(target)}
    missing = [p.name for p in sorted((ROOT / "docs").glob("*.md")) if p.resolve() not in listed]
    assert missing == [], f"README.md's documentation index does not link {missing}"
