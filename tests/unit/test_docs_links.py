"""Docs that cannot drift from the repository: cited paths exist, links resolve, tables match code.

| test | fails when |
|---|---|
| ``test_cited_doc_paths_exist`` | a tracked .py/.md/.toml/.yml/… file names a ``*.md`` path |
|                                | that is neither in the repository root nor beside it |
| ``test_relative_links_resolve`` | a relative link (or ``#anchor``) in README*.md or docs/*.md |
|                                 | points at nothing |
| ``test_generated_blocks_match_the_code`` | a generated block of docs/*.md (lifecycle table and |
|                                          | diagram, task routes) differs from the code's tables |
| ``test_lifecycle_doc_names_every_state_and_event`` | docs/LIFECYCLE.md lacks a row for a |
|                                                    | state or an event word |

A generated block sits between ``<!-- generated: NAME -->`` and ``<!-- /generated -->``.
After changing ``store.lifecycle.TRANSITIONS`` or ``worker.queues.ROUTES``, rewrite the blocks
with ``python -m tests.unit.test_docs_links --write`` and read the diff.

Paths written as ``owner/repo:path/file.md`` (or inside a URL) are another repository's files
and are not checked.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Files whose text may cite a document.
CITING_SUFFIXES = frozenset({".py", ".md", ".toml", ".yml", ".yaml", ".ini", ".cfg", ".example"})
CITING_NAMES = frozenset({"Makefile", "Dockerfile"})
# A `*.md` path not glued to a URL, an `owner/repo:` prefix or a longer word.
CITATION = re.compile(r"(?<![\w/:.@-])(\w[\w./-]*\.md)(?![\w-])")
LINK = re.compile(r"!?\[(?:[^\]\\]|\\.)*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")
FENCE = re.compile(r"^\s*(```|~~~)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
HTML_ANCHOR = re.compile(r"<a\s+(?:id|name)=\"([^\"]+)\"")
GENERATED = re.compile(
    r"<!-- generated: (?P<name>[\w-]+) -->\n(?P<body>.*?)<!-- /generated -->", re.DOTALL
)


def repository_files() -> list[Path]:
    """Tracked files plus new ones not ignored (what the next commit can contain)."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
            cwd=ROOT,
            capture_output=True,
            check=True,
            timeout=60,
        ).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"not a git checkout: {exc}")
    names = [name for name in listed.decode("utf-8").split("\0") if name]
    return [ROOT / name for name in names if (ROOT / name).is_file()]


def _prose_lines(text: str) -> Iterator[tuple[int, str]]:
    """(line number, line) outside fenced code blocks."""
    fenced = False
    for number, line in enumerate(text.splitlines(), start=1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            yield number, line


def github_anchors(markdown: str) -> set[str]:
    """The ``#fragment``s GitHub gives a Markdown file's headings (and explicit anchors)."""
    anchors: set[str] = set(HTML_ANCHOR.findall(markdown))
    seen: dict[str, int] = {}
    for _, line in _prose_lines(markdown):
        match = HEADING.match(line)
        if match is None:
            continue
        text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", match.group(2))  # a link's text only
        slug = re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        anchors.add(slug if count == 0 else f"{slug}-{count}")
    return anchors


def test_anchor_slugs_follow_github() -> None:
    text = "# Two words\n## 快速开始\n## `fapiao` CLI: verbs\n## Two words\n```\n# no\n```"
    assert github_anchors(text) == {"two-words", "快速开始", "fapiao-cli-verbs", "two-words-1"}


def test_citations_are_found_and_foreign_paths_skipped() -> None:
    line = (
        "see docs/LIFECYCLE.md, STYLE.md §3, (README.md) and openYZJ:docs/kdcloud_ex.md,"
        " https://example.com/x/NOTES.md, a.md5sum"
    )
    assert CITATION.findall(line) == ["docs/LIFECYCLE.md", "STYLE.md", "README.md"]


def test_cited_doc_paths_exist() -> None:
    missing: list[str] = []
    for path in repository_files():
        if path.suffix not in CITING_SUFFIXES and path.name not in CITING_NAMES:
            continue
        if path == Path(__file__).resolve():
            continue  # its own examples
        text = path.read_text(encoding="utf-8", errors="replace")
        for number, line in enumerate(text.splitlines(), start=1):
            for cited in CITATION.findall(line):
                if (ROOT / cited).is_file() or (path.parent / cited).is_file():
                    continue
                missing.append(f"{path.relative_to(ROOT)}:{number}: {cited}")
    assert not missing, "cited documents that are not in the repository:\n" + "\n".join(missing)


def _linked_documents() -> list[Path]:
    return sorted(ROOT.glob("README*.md")) + sorted((ROOT / "docs").rglob("*.md"))


def test_relative_links_resolve() -> None:
    documents = _linked_documents()
    assert ROOT / "README.md" in documents
    broken: list[str] = []
    anchors: dict[Path, set[str]] = {}

    def anchors_of(path: Path) -> set[str]:
        if path not in anchors:
            anchors[path] = github_anchors(path.read_text(encoding="utf-8"))
        return anchors[path]

    for document in documents:
        text = document.read_text(encoding="utf-8")
        for number, line in _prose_lines(text):
            for target in LINK.findall(line):
                if SCHEME.match(target):
                    continue
                where = f"{document.relative_to(ROOT)}:{number}: {target}"
                file_part, _, fragment = target.partition("#")
                linked = (document.parent / file_part).resolve() if file_part else document
                if not linked.exists():
                    broken.append(f"{where} (no such file)")
                    continue
                if fragment and linked.suffix == ".md" and fragment not in anchors_of(linked):
                    broken.append(f"{where} (no heading with that anchor)")
    assert not broken, "links that resolve to nothing:\n" + "\n".join(broken)


# --- generated blocks ---------------------------------------------------------------------


def render_lifecycle_table() -> str:
    """Every row of ``store.lifecycle.TRANSITIONS``, states and events in declaration order."""
    from store.lifecycle import TRANSITIONS
    from store.states import DocumentStatus, Event

    entry_points = {
        Event.claim: "`claim_for_push` / `claim_many_for_push`",
        Event.resubmit: "`accept_documents`",
    }
    lines = ["| from | event | to | kind | applied by |", "|---|---|---|---|---|"]
    for state in DocumentStatus:
        for event in Event:
            target = TRANSITIONS.get((state, event))
            if target is None:
                continue
            kind = "no-op" if target is state else "moves"
            by = entry_points.get(event, "`transition()`")
            lines.append(f"| `{state}` | `{event}` | `{target}` | {kind} | {by} |")
    return "\n".join(lines) + "\n"


def render_lifecycle_diagram() -> str:
    """The moving rows of the table as a Mermaid state diagram (no-ops left out)."""
    from store.lifecycle import TRANSITIONS
    from store.states import DocumentStatus, Event

    lines = ["```mermaid", "stateDiagram-v2", "  [*] --> draft: submit"]
    for state in DocumentStatus:
        for event in Event:
            target = TRANSITIONS.get((state, event))
            if target is not None and target is not state:
                lines.append(f"  {state} --> {target}: {event}")
    lines.append("  invoiced --> [*]")
    lines.append("```")
    return "\n".join(lines) + "\n"


def render_task_routes() -> str:
    """``worker.queues.ROUTES``: every task name and the queue it runs on."""
    from worker import queues

    lines = ["| task | queue |", "|---|---|"]
    for queue in queues.QUEUES:
        for task, routed in queues.ROUTES.items():
            if routed == queue:
                lines.append(f"| `{task}` | `{queue}` |")
    return "\n".join(lines) + "\n"


RENDERERS: dict[str, Callable[[], str]] = {
    "lifecycle-table": render_lifecycle_table,
    "lifecycle-diagram": render_lifecycle_diagram,
    "task-routes": render_task_routes,
}


def _docs_with_generated_blocks() -> list[Path]:
    return [
        path
        for path in sorted((ROOT / "docs").rglob("*.md"))
        if "<!-- generated: " in path.read_text(encoding="utf-8")
    ]


def rewrite_generated_blocks(text: str) -> str:
    def fill(match: re.Match[str]) -> str:
        name = match.group("name")
        if name not in RENDERERS:
            raise KeyError(f"no renderer for generated block {name!r}")
        return f"<!-- generated: {name} -->\n{RENDERERS[name]()}<!-- /generated -->"

    return GENERATED.sub(fill, text)


def test_generated_blocks_match_the_code() -> None:
    documents = _docs_with_generated_blocks()
    found = {
        match.group("name")
        for path in documents
        for match in GENERATED.finditer(path.read_text(encoding="utf-8"))
    }
    assert found == set(RENDERERS), f"generated blocks in docs/: {sorted(found)}"
    stale = [
        str(path.relative_to(ROOT))
        for path in documents
        if rewrite_generated_blocks(text := path.read_text(encoding="utf-8")) != text
    ]
    assert not stale, (
        f"{stale}: a generated block differs from the code; run"
        " `python -m tests.unit.test_docs_links --write` and read the diff"
    )


def test_lifecycle_doc_names_every_state_and_event() -> None:
    from store.states import DocumentStatus, Event, InboxState, OutboxState

    text = (ROOT / "docs" / "LIFECYCLE.md").read_text(encoding="utf-8")
    words = [*DocumentStatus, *Event, *InboxState, *OutboxState]
    undescribed = [word.value for word in words if f"\n| `{word.value}` |" not in text]
    assert not undescribed, f"docs/LIFECYCLE.md has no table row starting with {undescribed}"


def main(argv: list[str]) -> int:
    """``--write``: rewrite every generated block of docs/*.md from the code."""
    if argv != ["--write"]:
        print("usage: python -m tests.unit.test_docs_links --write", file=sys.stderr)
        return 2
    for path in _docs_with_generated_blocks():
        text = path.read_text(encoding="utf-8")
        updated = rewrite_generated_blocks(text)
        if updated != text:
            path.write_text(updated, encoding="utf-8")
            print(f"rewrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
