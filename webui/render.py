"""HTML and Markdown for the chat: answers with linked citations, source cards, checks, index status.

Everything from PubMed (titles, authors, journals, abstracts) and from the model is untrusted: it
is passed through ``html.escape`` before any markup is added around it, so a title holding
``<script>`` is shown as text and never becomes an element. ``plain_text`` undoes
``render_answer`` when an answer comes back as chat history, so the model sees its own words,
not links and badges.
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping
from datetime import UTC, datetime

from chatbot.answer import Answer
from chatbot.prompts import REFERENCES_HEADING
from chatbot.support import ATTRIBUTED_MARK, UNSUPPORTED_MARK, WEAK_MARK
from index.search import Hit

PLACEHOLDER = "_Searching the abstracts and writing an answer…_"
WRITING = "_Found {n} abstracts (see Sources); writing the answer…_"
ABSTAINED = "**No answer in the indexed literature.**"
RELATED_HEADING = "Related, but not answering: the closest abstracts"
# The support check's plain-text marks and how the chat shows them (and back, for history).
BADGES = {
    UNSUPPORTED_MARK.strip(): "⚠️ *unsupported*",
    WEAK_MARK.strip(): "⚠️ *weak support*",
    ATTRIBUTED_MARK.strip(): "⚠️ *not cited by the model; source found by the check*",
}
PASSAGE_CHARS = 450  # a card quotes about three sentences: enough to check a claim at a glance
AUTHORS_SHOWN = 3
# Publication types every second record has: showing them would drown the informative ones.
_UNINFORMATIVE_TYPES = ("Journal Article", "Research Support")
RETRACTED = "Retracted Publication"
_LINK = re.compile(r"\[\[(\d+)\]\]\([^)]*\)")
_CITATION = re.compile(r"\[(\d+(?:, \d+)*)\]")
_MARKDOWN_ESCAPES = str.maketrans({"[": "&#91;", "]": "&#93;", "@": "&#64;", "$": "&#36;"})
_WWW = re.compile(r"(?i)\bwww\.")


def render_answer(answer: Answer) -> str:
    """Escaped answer Markdown: [n] markers link to the cited PubMed pages, then the reference list."""
    if not answer.done and not answer.text:
        return WRITING.format(n=len(answer.sources)) if answer.sources else PLACEHOLDER
    body = answer.text.split(REFERENCES_HEADING)[0].rstrip()
    urls = {c.n: c.url for c in answer.citations}
    parts = _CITATION.split(body)  # text, numbers, text, ...: only our own [n] markers become links
    text = "".join(_link_numbers(p, urls) if i % 2 else escape_markdown(p) for i, p in enumerate(parts))
    for mark, badge in BADGES.items():
        text = text.replace(escape_markdown(mark), badge)
    if answer.done and answer.citations:
        text += "\n\n" + _references(answer)
    return f"{ABSTAINED} {text}" if answer.abstained else text


def escape_markdown(text: str) -> str:
    """Text that Markdown shows as written and can never turn into a link, an image or markup.

    Neither the model nor an abstract it echoes may add a link or make the browser load anything.
    Escaping the characters that every such construct needs is simpler and safer than finding the
    constructs: ``<`` (HTML tags, ``<https://...>`` autolinks), ``[`` and ``]`` (inline and
    reference links and images, their definitions, footnotes), the ``:`` of ``://`` (a bare URL,
    which GitHub-flavoured Markdown links by itself), ``@`` (bare e-mail addresses), the ``.``
    after ``www`` (bare ``www.`` links), and ``$`` (TeX, whose ``\\href`` and ``\\url`` make links).
    Character references are never Markdown syntax, and the browser shows them as the characters.
    """
    escaped = html.escape(text, quote=False).translate(_MARKDOWN_ESCAPES)
    return _WWW.sub("www&#46;", escaped.replace("://", "&#58;//"))


def _link_numbers(numbers: str, urls: dict[int, str]) -> str:
    """``1, 3`` -> ``[[1]](url)[[3]](url)``; a number that is no citation is dropped, never shown."""
    return "".join(f"[[{n}]]({urls[int(n)]})" if int(n) in urls else "" for n in numbers.split(", "))


def _references(answer: Answer) -> str:
    """The cited sources by number, as the chatbot lists them, built from escaped fields."""
    lines = [REFERENCES_HEADING]
    for citation in sorted(answer.citations, key=lambda c: c.n):
        a = answer.sources[citation.n - 1].article
        authors = ", ".join(a.authors[:AUTHORS_SHOWN]) + (", et al" if len(a.authors) > AUTHORS_SHOWN else "")
        parts = [escape_markdown(p) for p in (authors, a.title.rstrip("."), a.journal, str(a.year or "n.d.")) if p]
        lines.append(f"\\[{citation.n}\\] " + ". ".join(parts) + f". [PMID {citation.pmid}]({citation.url})")
    return "\n\n".join(lines)


def plain_text(markdown: str) -> str:
    """The answer as the model wrote it: no reference list, links back to [n], badges back to marks."""
    if markdown == PLACEHOLDER:
        return ""
    body = markdown.removeprefix(ABSTAINED).split(REFERENCES_HEADING)[0].strip()
    text = _LINK.sub(r"[\1]", body)
    for mark, badge in BADGES.items():
        text = text.replace(badge, mark)
    return html.unescape(text)


def render_sources(answer: Answer, passages: Mapping[str, str] | None = None) -> str:
    """The checks on the answer, then one card per source; ``passages`` maps PMID -> matched text."""
    if not answer.sources:
        return "" if not answer.done else '<p class="no-sources">No abstracts retrieved.</p>'
    cited = {c.n for c in answer.citations}
    heading = RELATED_HEADING if answer.abstained else "Sources"
    parts = [render_query(answer), render_checks(answer), f"<h3>{heading}</h3>"]
    for n, hit in enumerate(answer.sources, start=1):
        passage = (passages or {}).get(hit.pmid) or hit.article.conclusion
        parts.append(source_card(n, hit, passage, cited=n in cited))
    return "\n".join(p for p in parts if p)


def source_card(n: int, hit: Hit, passage: str, *, cited: bool) -> str:
    """Title, authors, journal, year, PMID link, the passage that matched, and the full abstract."""
    a = hit.article
    url = html.escape(hit.url)
    link = f'href="{url}" target="_blank" rel="noopener noreferrer"'
    badges = ('<span class="badge cited">cited</span>' if cited else "") + (
        '<span class="badge retracted">retracted publication</span>' if RETRACTED in a.publication_types else ""
    )
    authors = ", ".join(a.authors[:AUTHORS_SHOWN]) + (" et al." if len(a.authors) > AUTHORS_SHOWN else "")
    meta = " · ".join(
        p
        for p in (
            html.escape(authors),
            f"<i>{html.escape(a.journal)}</i>" if a.journal else "",
            str(a.year) if a.year else "n.d.",
            f"<a {link}>PMID {html.escape(hit.pmid)}</a>",
            f"similarity {hit.score:.2f}",
        )
        if p
    )
    types = [t for t in a.publication_types if not t.startswith(_UNINFORMATIVE_TYPES) and t != RETRACTED]
    type_line = f'<div class="source-types">{html.escape(" · ".join(types))}</div>' if types else ""
    return (
        f'<div class="source-card" id="source-{n}">'
        f'<div class="source-head"><span class="source-n">[{n}]</span>{badges} '
        f"<a {link}>{html.escape(a.title)}</a></div>"
        f'<div class="source-meta">{meta}</div>{type_line}'
        f'<blockquote class="source-passage">{html.escape(_shorten(passage, PASSAGE_CHARS))}</blockquote>'
        f"<details><summary>Full abstract</summary>{_abstract_html(hit)}</details></div>"
    )


def _abstract_html(hit: Hit) -> str:
    return "".join(
        f"<p>{f'<b>{html.escape(s.label)}</b> ' if s.label else ''}{html.escape(s.text)}</p>"
        for s in hit.article.sections
    )


def render_checks(answer: Answer) -> str:
    """What the pipeline checked, in words: abstention, support marks, removed citations, dropped sources."""
    if not answer.done:
        return ""
    if answer.abstained:
        items = ["<b>Abstained:</b> the indexed abstracts do not answer this question, so no answer is given."]
        items.append(_gate_line(answer))
    elif answer.mode == "extractive":
        items = [_extractive_line(answer)]
    else:
        items = [
            _support_line(answer),
            f"Cites {len({c.n for c in answer.citations})} of {len(answer.sources)} sources.",
        ]
    if answer.tempered:
        items.append("⚠️ The answer's yes/no was softened: the abstract its first claim cites does not back it.")
    if answer.invalid_citations:
        items.append(f"⚠️ {answer.invalid_citations} citation(s) to sources that were not retrieved were removed.")
    if answer.dropped_sources:
        items.append(f"{answer.dropped_sources} retrieved abstract(s) left out to fit the model's context.")
    return '<div class="answer-checks">' + "".join(f"<div>{item}</div>" for item in items if item) + "</div>"


def _gate_line(answer: Answer) -> str:
    """Why the gate abstained, in its own numbers (chatbot/gate.py)."""
    gate = answer.sufficiency
    if gate is None or gate.answerable:
        return ""
    return (
        f"Evidence score {gate.evidence:.2f} &lt; {gate.threshold:.2f} (best similarity {gate.similarity:.2f}, "
        f"{gate.coverage:.0%} of the question's terms, the rare ones weighing more, in one abstract)."
    )


def _extractive_line(answer: Answer) -> str:
    why = f"the model's answer was unusable ({html.escape(', '.join(answer.replaced))}), so " if answer.replaced else ""
    return (
        f"<b>Quoted evidence:</b> {why}the answer is the sentences of the sources that best match the "
        "question, copied word for word; it states no verdict of its own."
    )


def render_query(answer: Answer) -> str:
    """The standalone query a follow-up was searched as (the user can edit it and search again)."""
    if not answer.query or answer.query.strip() == answer.question.strip():
        return ""
    return f'<div class="search-query">Searched for: <q>{html.escape(answer.query)}</q></div>'


def _support_line(answer: Answer) -> str:
    if not answer.support:
        return "Support check: not run."
    counts = {s: sum(1 for x in answer.support if x.status == s) for s in ("supported", "attributed")}
    parts = [f"{counts['supported']} supported", f"{counts['attributed']} attributed"]
    parts += [f"⚠️ {answer.weak} weak support"] if answer.weak else []
    parts += [f"⚠️ {answer.unsupported} unsupported"] if answer.unsupported else []
    return "<b>Support check</b> (sentences vs. cited abstracts): " + ", ".join(parts) + "."


def render_status(stats: Mapping[str, object], model: str, *, fallback_note: str = "") -> str:
    """Index status Markdown: abstracts, encoder, last update, generation, and the default model."""
    updated = _when(str(stats.get("updated_at") or ""))
    return (
        f"**Index:** {int(stats.get('documents', 0)):,} abstracts · encoder `{_code(stats.get('encoder'))}` · "
        f"updated {updated} · {_code(stats.get('generation'))}  \n"
        f"**Model:** `{_code(model)}`{html.escape(fallback_note, quote=False)}"
    )


def _when(iso: str) -> str:
    try:
        return datetime.fromisoformat(iso).astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
    except ValueError:
        return "unknown"


def _code(value: object) -> str:
    return html.escape(str(value or ""), quote=False).replace("`", "'")


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit].rsplit(" ", 1)[0] + " …"
