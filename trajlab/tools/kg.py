"""The `kg` tool: a triplet store (subject, relation, object) queried by entity and relation.

    store = TripletStore.from_jsonl("kg.jsonl")                 # {"subject", "relation", "object"}
    store = TripletStore(extract_triplets(passages))            # or pattern-extracted from passages
    tool = KGTool(store)
    tool.run({"query": "France | capital"})   # -> "(Paris; capital of; France)"
    tool.run({"query": "Paris"})              # every triplet mentioning Paris

Query syntax (the model writes it between <kg> and </kg> in the `tags` protocol):

    ENTITY                 all triplets with ENTITY as subject or object
    ENTITY | RELATION      only those whose relation matches RELATION

Results are one triplet per line, `(subject; relation; object)`, at most
`max_results`, in store order. Nothing found is an ordinary observation that says
which part failed: no matching entity (with similar entity names when there are
some), or no matching relation (with the relations the entity does have).

Matching, deterministic and dependency-free:
* entities are normalised (case folded, punctuation and the articles a/an/the
  dropped, whitespace collapsed); an exact normalised match wins, else entities
  containing every query word (shortest first), else difflib close matches
  (ratio >= 0.85) to catch typos;
* relations match when they share a content word after a crude stem (the first five
  letters), so "director" matches "directed by", plus a dozen aliases from role
  nouns to the extractor's verbs (author -> written by, birthplace -> born in,
  cast/actor -> starring); there are no other synonyms ("capital city" matches
  "capital of", "seat of government" does not).

Knowledge tracing (KnowTrace, arXiv 2505.20245): KnowTrace's completion step
retrieves passages for an (entity, relation) pair and has the LLM extract triplets.
`KGTool(retriever=...)` does a rule-based version of that per call: when the static
store has no answer it searches "ENTITY RELATION", extracts triplets from the hits
and answers from those. It keeps no state between calls, so trajectories stay
independent and replayable (the search itself can go through the search tool's cache).

The extractor (`extract_triplets`) is a handful of regular expressions over sentences,
and its quality is low: it finds copular facts ("X is the R of Y", "X was a Y"),
passive "by" relations ("directed by", "written by", ...), "born in", "located in"
and "starring", resolves a sentence-initial He/She/It/They to the passage title, and
drops subjects longer than eight words. It misses most facts, splits sentences at
abbreviations, and cuts objects at the first comma. It is a deterministic baseline
for the plumbing, not an information-extraction system; supply a JSONL store from a
better extractor (or an LLM, as KnowTrace does) for real use.

What this module does not do: reasoning over paths, entity linking, or LLM extraction.
"""

from __future__ import annotations

import difflib
import json
import re
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trajlab.config import opt
from trajlab.tools.base import ToolResult, function_schema


@dataclass
class KGConfig:
    """Settings of the kg tool (flags: --kg-path, --kg-corpus, ...)."""

    kg_path: str = opt("", "JSONL triplets, one {subject, relation, object} per line")
    kg_corpus: str = opt(
        "", "JSONL passages ({id, title, text}) to extract triplets from at start-up"
    )
    kg_corpus_limit: int = opt(0, "extract from the first N passages of kg_corpus only (0: all)")
    kg_from_search: bool = opt(
        False, "on a miss, extract triplets from passages retrieved from --search-index"
    )
    kg_k: int = opt(5, "passages retrieved per kg miss when kg_from_search is on")
    kg_max_results: int = opt(10, "triplets shown per call")

    def check(self) -> None:
        """What would stop the tool from starting, found before any model loads."""
        from pathlib import Path

        for name in ("kg_path", "kg_corpus"):
            value = getattr(self, name)
            if value and not Path(value).is_file():
                raise ValueError(f"{name} {value!r} does not exist")
        if not (self.kg_path or self.kg_corpus or self.kg_from_search):
            raise ValueError("the kg tool needs --kg-path, --kg-corpus or --kg-from-search")


@dataclass(frozen=True)
class Triplet:
    subject: str
    relation: str
    object: str
    source: str = ""  # passage id it came from, if extracted

    def render(self) -> str:
        return f"({self.subject}; {self.relation}; {self.object})"


# -- normalisation and matching (pure) -----------------------------------------

_ARTICLES = {"a", "an", "the"}
_REL_STOP = {"a", "an", "the", "of", "by", "in", "on", "is", "was", "to", "for", "at", "as"}


def norm_entity(s: str) -> str:
    words = re.sub(r"[^\w\s]", " ", s.casefold()).split()
    return " ".join(w for w in words if w not in _ARTICLES)


# A few role nouns and the passive verbs the extractor writes (by stem). No other synonyms.
_ALIASES = {
    "autho": "writt",
    "write": "writt",
    "wrote": "writt",
    "birth": "born",
    "locat": "locat",
    "found": "found",
    "star": "starr",
    "stars": "starr",
    "actor": "starr",
    "actre": "starr",
    "cast": "starr",
    "publi": "publi",
    "produ": "produ",
}


def _stems(relation: str) -> set[str]:
    words = re.sub(r"[^\w\s]", " ", relation.casefold()).split()
    stems = {w[:5] for w in words if w not in _REL_STOP}
    return stems | {_ALIASES[s] for s in stems if s in _ALIASES}


def relation_matches(query: str, relation: str) -> bool:
    """True if the two share a content word (first five letters), or the query is empty."""
    q = _stems(query)
    return not q or bool(q & _stems(relation))


def parse_query(query: str) -> tuple[str, str]:
    """'ENTITY | RELATION' -> (entity, relation); 'ENTITY' -> (entity, '')."""
    entity, _, relation = query.partition("|")
    return entity.strip().strip("\"'"), relation.strip()


class TripletStore:
    def __init__(self, triplets: Iterable[Triplet]) -> None:
        self.triplets = list(dict.fromkeys(triplets))  # dedupe, keep first-seen order
        self._by_entity: dict[str, list[int]] = defaultdict(list)
        for i, t in enumerate(self.triplets):
            for e in {norm_entity(t.subject), norm_entity(t.object)}:
                if e:
                    self._by_entity[e].append(i)
        self._names = sorted(self._by_entity)

    def __len__(self) -> int:
        return len(self.triplets)

    @classmethod
    def from_jsonl(cls, path: str | Path) -> TripletStore:
        out = []
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    d = json.loads(line)
                    out.append(
                        Triplet(
                            str(d["subject"]),
                            str(d["relation"]),
                            str(d["object"]),
                            str(d.get("source", "")),
                        )
                    )
                except (json.JSONDecodeError, KeyError, TypeError) as e:
                    raise ValueError(
                        f"{path}:{n}: not a triplet ({e!r}); expected one JSON object per line "
                        'with "subject", "relation" and "object" strings'
                    ) from None
        return cls(out)

    def to_jsonl(self, path: str | Path) -> None:
        with open(path, "w", encoding="utf-8") as f:
            for t in self.triplets:
                row = {"subject": t.subject, "relation": t.relation, "object": t.object}
                if t.source:
                    row["source"] = t.source
                f.write(json.dumps(row, ensure_ascii=False) + "\n")

    def match_entities(self, entity: str, limit: int = 3) -> list[str]:
        """Normalised entity names matching `entity`, best first (see module docstring)."""
        q = norm_entity(entity)
        if not q:
            return []
        if q in self._by_entity:
            return [q]
        words = set(q.split())
        containing = [n for n in self._names if words <= set(n.split())]
        if containing:
            return sorted(containing, key=lambda n: (len(n), n))[:limit]
        return difflib.get_close_matches(q, self._names, n=limit, cutoff=0.85)

    def similar_entities(self, entity: str, limit: int = 3) -> list[str]:
        return difflib.get_close_matches(norm_entity(entity), self._names, n=limit, cutoff=0.6)

    def lookup(self, entity: str, relation: str = "") -> tuple[list[Triplet], list[str]]:
        """Triplets of the best-matching entities whose relation matches; and those entities."""
        names = self.match_entities(entity)
        rows = sorted({i for n in names for i in self._by_entity[n]})
        found = [
            self.triplets[i] for i in rows if relation_matches(relation, self.triplets[i].relation)
        ]
        return found, names

    def relations_of(self, names: list[str]) -> list[str]:
        rows = sorted({i for n in names for i in self._by_entity[n]})
        return list(dict.fromkeys(self.triplets[i].relation for i in rows))


# -- extraction (pure, deterministic) ------------------------------------------

# Sentence ends, except after an initial ("Jerry B. Jenkins") or a common abbreviation.
_SENT_SPLIT = re.compile(
    r"(?<![\s.][A-Z]\.)(?<!Inc\.)(?<!Jr\.)(?<!Sr\.)(?<!St\.)(?<!Dr\.)(?<!Mr\.)(?<!Mrs\.)(?<!No\.)"
    r"(?<=[.!?])\s+(?=[A-Z\"'(])"
)
_PAREN = re.compile(r"\s*\([^()]*\)")
_PRONOUN = re.compile(r"^(He|She|It|They)\b")
_COPULA = r"(?:is|was|are|were|has been|had been)"
_OF_REL = re.compile(
    rf"^(?P<s>.+?) {_COPULA} (?:the|a|an|one of the) (?P<r>[a-z][\w -]*?) of (?P<o>.+)$"
)
_IS_A = re.compile(rf"^(?P<s>.+?) {_COPULA} (?:a|an) (?P<o>.+)$")
_BY_VERBS = (
    "directed|written|produced|founded|created|composed|developed|published|designed|"
    "built|owned|performed|released|invented|discovered|edited|illustrated|co-founded"
)
_BY = re.compile(rf"\b(?P<r>{_BY_VERBS}) by (?P<o>.+)$")
_BORN = re.compile(r"\bborn\b.*?\bin (?P<o>[A-Z].*)$")
_LOCATED = re.compile(r"\b(?:located|situated|based|headquartered) in (?P<o>.+)$")
_STARRING = re.compile(r"\bstarring (?P<o>.+)$")
_SUBJECT = re.compile(rf"^(?P<s>.+?) {_COPULA} ")
_OBJECT_END = re.compile(
    r",|;|:| which | who | whom | that | where | when | while | as | from | since | until | with | for "
    rf"| starring |(?: and)? (?:{_BY_VERBS})(?: and (?:{_BY_VERBS}))? by "
)
_BAD_FIRST = {"in", "on", "at", "after", "before", "during", "from", "by", "as", "when", "while"}
_BAD_FIRST |= {"although", "since", "however", "but", "and", "if", "because"}
_BAD_LAST = {"and", "or", "but", "the", "of", "a", "an", "he", "she", "it", "they"}


def _clean_object(o: str) -> str:
    o = _OBJECT_END.split(o, maxsplit=1)[0]
    o = o.strip().rstrip(".").strip().strip("\"'")
    return " ".join(o.split()[:10])


def _ok_subject(s: str) -> bool:
    words = s.strip().rstrip(",").split()
    return (
        0 < len(words) <= 8
        and (words[0][0].isupper() or words[0][0].isdigit())
        and words[0].lower() not in _BAD_FIRST
        and words[-1].lower() not in _BAD_LAST
        and not s.strip().endswith(",")
    )


def split_sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENT_SPLIT.split(text) if s.strip()]


def extract_from_sentence(sentence: str, title: str = "", source: str = "") -> list[Triplet]:
    """Pattern-matched triplets of one sentence (see the module docstring for the patterns)."""
    s = _PAREN.sub("", sentence).strip().rstrip(".")
    if title:
        s = _PRONOUN.sub(title, s)
    out: list[Triplet] = []

    def add(subj: str, rel: str, obj: str) -> None:
        subj, obj = subj.strip().strip("\"'"), _clean_object(obj)
        if _ok_subject(subj) and obj and norm_entity(obj) != norm_entity(subj):
            out.append(Triplet(subj, " ".join(rel.lower().split()), obj, source))

    subj_m = _SUBJECT.match(s)
    subject = subj_m.group("s") if subj_m else ""
    if m := _OF_REL.match(s):
        add(m.group("s"), m.group("r") + " of", m.group("o"))
    elif m := _IS_A.match(s):
        add(m.group("s"), "is a", m.group("o"))
    for pattern, rel in (
        (_BY, None),
        (_BORN, "born in"),
        (_LOCATED, "located in"),
        (_STARRING, "starring"),
    ):
        m = pattern.search(s)
        if m is None:
            continue
        head = s[: m.start()].strip()
        subj = subject or (head if _ok_subject(head) and len(head.split()) <= 4 else title)
        add(subj, rel or f"{m.group('r')} by", m.group("o"))
    return out


def extract_triplets(passages: Iterable[Any]) -> list[Triplet]:
    """Triplets from passages (objects with .id, .title, .text), in passage order."""
    out: list[Triplet] = []
    for p in passages:
        for sentence in split_sentences(p.text):
            out.extend(extract_from_sentence(sentence, p.title, p.id))
    return out


# -- the tool -----------------------------------------------------------------


class KGTool:
    name = "kg"
    schema = function_schema(
        "kg",
        "Look up facts (subject, relation, object) about an entity in the knowledge graph.",
        {"query": "an entity name, or 'entity | relation' to narrow the facts"},
    )

    def __init__(
        self,
        store: TripletStore | None = None,
        retriever: Any = None,
        k: int = 5,
        max_results: int = 10,
    ) -> None:
        if store is None and retriever is None:
            raise ValueError(
                "the kg tool needs triplets: pass --kg-path FILE.jsonl, --kg-corpus PASSAGES.jsonl, "
                "or --kg-from-search with --search-index DIR"
            )
        self.store = store or TripletStore([])
        self.retriever, self.k, self.max_results = retriever, k, max_results

    @classmethod
    def from_config(cls, config: KGConfig, search_index: str = "") -> KGTool:
        triplets: list[Triplet] = []
        if config.kg_path:
            triplets += TripletStore.from_jsonl(config.kg_path).triplets
        if config.kg_corpus:
            from trajlab.retrieval.corpus import read_corpus

            triplets += extract_triplets(
                read_corpus(config.kg_corpus, config.kg_corpus_limit or None)
            )
        retriever = None
        if config.kg_from_search:
            if not search_index:
                raise ValueError("kg_from_search needs --search-index DIR")
            from trajlab.retrieval import load_index

            retriever = load_index(search_index)
        store = TripletStore(triplets) if (config.kg_path or config.kg_corpus) else None
        return cls(store, retriever, k=config.kg_k, max_results=config.kg_max_results)

    def answer(self, query: str) -> tuple[str, str, list[Triplet]]:
        """(observation, status, triplets shown) for one query."""
        entity, relation = parse_query(query)
        if not entity:
            return "Error: write the query as 'entity' or 'entity | relation'.", "bad_args", []
        found, names = self.store.lookup(entity, relation)
        store = self.store
        if not found and self.retriever is not None:
            hits = self.retriever.search(f"{entity} {relation}".strip(), self.k)
            store = TripletStore(extract_triplets(hits))
            found, names = store.lookup(entity, relation)
        if found:
            shown = found[: self.max_results]
            more = len(found) - len(shown)
            text = "\n".join(t.render() for t in shown)
            if more:
                text += f"\n... and {more} more; add '| relation' to narrow the query."
            return text, "ok", shown
        if not names:
            similar = store.similar_entities(entity) or self.store.similar_entities(entity)
            hint = f" Similar entities: {', '.join(similar)}." if similar else ""
            return f"No entity matches {entity!r}.{hint}", "no_match", []
        rels = store.relations_of(names)
        return (
            f"{names[0]!r} has no relation matching {relation!r}. Its relations: {', '.join(rels[:15])}.",
            "no_match",
            [],
        )

    def run(self, args: dict[str, Any]) -> ToolResult:
        t0 = time.perf_counter()
        query = args.get("query")
        if not isinstance(query, str) or not query.strip():
            return ToolResult(
                output="Error: the kg query is empty; write 'entity' or 'entity | relation'.",
                ok=False,
                status="bad_args",
                error="empty query",
            )
        text, status, _ = self.answer(query)
        ok = status != "bad_args"
        return ToolResult(
            output=text,
            ok=ok,
            status=status,
            error=None if ok else text,
            latency_s=time.perf_counter() - t0,
        )

    def close(self) -> None:
        pass
