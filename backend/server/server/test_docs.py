"""The README and the pages under docs/: every relative link leads somewhere, every anchor
names a heading, and the README stays short enough to read first.

Links are checked as GitHub renders them: a relative target is a file or folder relative
to the page that links to it, and ``#anchor`` (on its own, or after a ``.md`` target) must be
the slug of a heading in that page, by GitHub's rule: lower case; every character other
than a letter, a digit, a space, a hyphen or an underscore removed; each space a hyphen;
the second heading with the same slug gets ``-1``, the third ``-2``. Links with a scheme
(``https:``, ``mailto:``) are not followed. Code blocks and code spans are not links."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote

from django.conf import settings

REPO = Path(settings.BASE_DIR).parent.parent
README_MAX_BYTES = 8192

FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
ATX_HEADING = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
SETEXT_UNDERLINE = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
CODE_SPAN = re.compile(r"(`+)(.+?)(?<!`)\1(?!`)")
# The target of an inline link or image, `](target)` or `](target "title")`, also when the
# link text wraps onto the line before; `](<a target>)` for targets with spaces.
INLINE_LINK = re.compile(r"\]\(\s*(<[^>\n]*>|[^\s()]+)(?:\s+(?:\"[^\"]*\"|'[^']*'))?\s*\)")
REFERENCE_DEFINITION = re.compile(r"^ {0,3}\[[^\]]+\]:\s*(<[^>]*>|\S+)")
HTML_ANCHOR = re.compile(r"<a\s[^>]*\b(?:name|id)=\"([^\"]+)\"", re.IGNORECASE)
SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def markdown_files() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def prose_lines(text: str) -> Iterator[tuple[int, str, str]]:
    """(line number, line, line with its code spans blanked) outside fenced code blocks."""
    fence: str | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        match = FENCE.match(line)
        if fence is None and match:
            fence = match.group(1)
            continue
        if fence is not None:
            if match and match.group(1)[0] == fence[0] and len(match.group(1)) >= len(fence):
                fence = None
            continue
        yield number, line, CODE_SPAN.sub(lambda m: " " * len(m.group(0)), line)


def heading_text(raw: str) -> str:
    """What GitHub shows of a heading: code spans keep their text, links their label,
    emphasis and HTML tags go."""
    parts = []
    last = 0
    for match in CODE_SPAN.finditer(raw):
        parts.append(_plain(raw[last : match.start()]))
        parts.append(match.group(2).strip())
        last = match.end()
    parts.append(_plain(raw[last:]))
    return "".join(parts).strip()


def _plain(text: str) -> str:
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", text)  # [label](target) -> label
    text = re.sub(r"<[^>]+>", "", text)
    text = re.sub(r"(?<!\w)_(.+?)_(?!\w)", r"\1", text)  # _emphasis_, not snake_case
    return text.replace("*", "")


def slug(text: str) -> str:
    """GitHub's anchor for a heading's text (before duplicates are numbered)."""
    return re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")


def anchors(text: str) -> set[str]:
    """Every anchor of a page: its headings' slugs, numbered as GitHub numbers repeats,
    and the names of explicit ``<a name=...>`` / ``id=...`` anchors."""
    found: set[str] = set()
    seen: dict[str, int] = {}

    def add(heading: str) -> None:
        base = slug(heading_text(heading))
        name = base
        while name in found:
            seen[base] = seen.get(base, 0) + 1
            name = f"{base}-{seen[base]}"
        found.add(name)

    previous = ""
    for _number, line, prose in prose_lines(text):
        atx = ATX_HEADING.match(line)
        if atx:
            add(atx.group(2) or "")
        elif SETEXT_UNDERLINE.match(line) and _paragraph_line(previous):
            add(previous)
        found.update(HTML_ANCHOR.findall(prose))
        previous = line if not atx else ""
    return found


def _paragraph_line(line: str) -> bool:
    stripped = line.strip()
    return bool(stripped) and not re.match(r"([-*+>|#]|\d+[.)])(\s|$)", stripped)


def links(text: str) -> Iterator[tuple[int, str]]:
    """(line number, target) of every inline link, image and reference definition."""
    for number, _line, prose in prose_lines(text):
        targets = [m.group(1) for m in INLINE_LINK.finditer(prose)]
        definition = REFERENCE_DEFINITION.match(prose)
        if definition:
            targets.append(definition.group(1))
        for target in targets:
            yield number, target.removeprefix("<").removesuffix(">")


def broken_links(files: list[Path], root: Path) -> list[str]:
    """One message per broken link, ``file:line: target: why``, file relative to root."""
    problems = []
    pages: dict[Path, set[str]] = {}

    def anchors_of(page: Path) -> set[str]:
        if page not in pages:
            pages[page] = anchors(page.read_text(encoding="utf-8"))
        return pages[page]

    for source in files:
        text = source.read_text(encoding="utf-8")
        for number, target in links(text):
            if SCHEME.match(target):
                continue  # https:, mailto:, ...: not ours to check
            path_part, _, anchor = target.partition("#")
            where = f"{source.relative_to(root)}:{number}: ({target})"
            destination = (
                (source.parent / unquote(path_part)).resolve() if path_part else source.resolve()
            )
            if not destination.exists():
                problems.append(f"{where}: no such file {os.path.relpath(destination, root)}")
                continue
            if anchor and destination.suffix == ".md" and destination.is_file():
                if unquote(anchor) not in anchors_of(destination):
                    known = ", ".join(sorted(anchors_of(destination)))
                    problems.append(
                        f"{where}: no heading #{anchor} in {os.path.relpath(destination, root)} "
                        f"(its anchors: {known})"
                    )
    return problems


def test_relative_links_and_anchors_resolve() -> None:
    problems = broken_links(markdown_files(), REPO.resolve())
    assert not problems, f"{len(problems)} broken link(s):\n" + "\n".join(problems)


def test_readme_is_short() -> None:
    size = len((REPO / "README.md").read_bytes())
    assert size <= README_MAX_BYTES, (
        f"README.md is {size} bytes, more than {README_MAX_BYTES}: move the detail to a page "
        "under docs/ and link to it."
    )


def test_every_docs_page_is_in_the_index() -> None:
    index = REPO / "docs" / "README.md"
    linked = {
        (index.parent / target.partition("#")[0]).resolve()
        for _number, target in links(index.read_text(encoding="utf-8"))
        if not SCHEME.match(target)
    }
    pages = {page.resolve() for page in (REPO / "docs").glob("*.md") if page != index}
    missing = sorted(page.name for page in pages - linked)
    assert not missing, f"docs/README.md does not list: {', '.join(missing)}"


def test_slugs_follow_github() -> None:
    page = (
        "# Speed\n## Any model, measured\n## Batch jobs' upkeep\n### `make run`\n"
        "## Under load: nothing lost, nothing doubled\n## FEEDBACK_ACCESS and _emphasis_\n"
        "## Speed\n## Speed\n```\n# not a heading\n```\nSetext\n---\n"
    )
    assert anchors(page) == {
        "speed",
        "any-model-measured",
        "batch-jobs-upkeep",
        "make-run",
        "under-load-nothing-lost-nothing-doubled",
        "feedback_access-and-emphasis",
        "speed-1",
        "speed-2",
        "setext",
    }


def test_the_check_reports_broken_links(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "page.md").write_text("# Page\n\n## A section\n")
    readme = tmp_path / "README.md"
    readme.write_text(
        "# Title\n\n"
        "[fine](docs/page.md#a-section) [fine too](#title) [web](https://example.com/x#y)\n"
        "[no file](docs/missing.md)\n"
        "[no anchor](docs/page.md#nowhere) and [wrapped\n"
        "label](#no-such-heading)\n"
        "```\n[in code](docs/missing.md)\n```\n"
        "`[in a code span](docs/missing.md)`\n"
    )
    problems = broken_links([readme, tmp_path / "docs" / "page.md"], tmp_path.resolve())
    assert [p.split(": ")[0] + ": " + p.split(": ")[1] for p in problems] == [
        "README.md:4: (docs/missing.md)",
        "README.md:5: (docs/page.md#nowhere)",
        "README.md:6: (#no-such-heading)",
    ]
