"""Gmail-style search queries: parse, then compile to Typesense ``q`` + ``filter_by``.

Grammar (implicit AND between terms; ``OR`` binds looser; ``-`` negates the next term)::

    query   := or
    or      := and ("OR" and)*
    and     := unary+                      ("AND" between terms is allowed and ignored)
    unary   := "-" unary | primary
    primary := "(" or ")" | name ":" value | "quoted phrase" | word
    value   := word | "quoted phrase"

Operators: from: to: cc: bcc: subject: label: in: is: has: filename: before: after:
older_than: newer_than: larger: smaller:. A ``word:rest`` whose prefix is not an operator is
plain text (as in Gmail: ``re:meeting``, URLs). Every mistake raises ``ValidationError`` on
field ``query`` whose message names the position (0-based) and the token.

Compilation works on the condition tree in negation normal form, because Typesense (0.24 and
v30 alike) has no ``!( ... )``: negation is pushed down to the leaves (De Morgan), where every
leaf has an exact opposite (``:=``/``:!=``, ``<``/``>=``, ``true``/``false``). Text is matched
through exact term arrays (see app/domain/search_terms.py), so a word matches the same way
under OR and negation as at top level. Positive top-level words and phrases also go to ``q``,
which adds highlights and real phrase adjacency.

One module although over 400 lines: the lexer, parser, normal form and compiler are one
language, and a rule of the grammar is changed in all of them at once.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from app.domain.errors import ValidationError
from app.domain.search_terms import (
    address_query_term,
    encode_term,
    label_term,
    phrase_key,
    words,
)

MAX_QUERY_CHARS = 1000
MAX_TERMS = 60
MAX_DEPTH = 16
FOLDERS = ("INBOX", "SENT", "DRAFTS", "TRASH", "SPAM", "ARCHIVE")
HIDDEN_FOLDERS = ("TRASH", "SPAM")  # left out unless the query says in: (Gmail does the same)
QUERY_BY = "subject,body,from,to,cc,bcc,filenames"
SIZE_UNITS = {"": 1, "b": 1, "k": 1024, "kb": 1024, "m": 1024**2, "mb": 1024**2}
AGE_UNITS = {"d": 1, "m": 30, "y": 365}  # days; a month is 30 days, a year 365
ADDRESS_FIELDS = {"from": "from_keys", "to": "to_keys", "cc": "cc_keys", "bcc": "bcc_keys"}
OPERATORS = {
    *ADDRESS_FIELDS,
    "subject",
    "label",
    "in",
    "is",
    "has",
    "filename",
    "before",
    "after",
    "older_than",
    "newer_than",
    "larger",
    "smaller",
}
_OPERATOR = re.compile(r"([A-Za-z_]+):(.*)", re.DOTALL)
_DATE = re.compile(r"(\d{4})[/-](\d{1,2})[/-](\d{1,2})")
_AGE = re.compile(r"(\d{1,5})([dmy])", re.IGNORECASE)
_SIZE = re.compile(r"(\d{1,12})(b|k|kb|m|mb)?", re.IGNORECASE)
FALSE_FILTER = "folder:=`-`"  # no item has folder "-": the filter that matches nothing


# --- the condition tree ---------------------------------------------------------------------


@dataclass(frozen=True)
class Cond:
    """One indexed field compared with one value; ``op``: = != < <= > >=."""

    field: str
    op: str
    value: str | int | bool


@dataclass(frozen=True)
class Text:
    """Free text: one word (possibly several terms, ``foo-bar``) or a quoted phrase."""

    terms: tuple[str, ...]
    phrase: bool


@dataclass(frozen=True)
class Not:
    node: Node


@dataclass(frozen=True)
class And:
    nodes: tuple[Node, ...]


@dataclass(frozen=True)
class Or:
    nodes: tuple[Node, ...]


Node = Cond | Text | Not | And | Or
TRUE: Node = And(())
FALSE: Node = Or(())
_OPPOSITE = {"=": "!=", "!=": "=", "<": ">=", ">=": "<", ">": "<=", "<=": ">"}


@dataclass(frozen=True)
class SearchQuery:
    """A parsed query: the tree, and whether it named a folder (else TRASH/SPAM are hidden)."""

    tree: Node
    names_folder: bool


@dataclass(frozen=True)
class CompiledSearch:
    """What to send to Typesense for the viewer's part of a search (owner is added later)."""

    q: str
    filter_by: str  # "" when the query puts no condition on the documents
    conditions: Node = field(repr=False)  # negation normal form, for checks against live state


# --- lexer ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Token:
    kind: str  # word phrase op or and not lparen rparen
    text: str
    pos: int
    name: str = ""
    value: str = ""
    quoted: bool = False


def _problem(message: str) -> ValidationError:
    return ValidationError.on("query", message)


def _read_phrase(text: str, start: int) -> tuple[str, int]:
    end = text.find('"', start + 1)
    if end < 0:
        raise _problem(f'unterminated quote: the " at position {start} is never closed')
    return text[start + 1 : end], end + 1


def _tokens(text: str) -> Iterator[_Token]:
    i, n = 0, len(text)
    while i < n:
        char = text[i]
        if char.isspace():
            i += 1
        elif char in "()":
            yield _Token("lparen" if char == "(" else "rparen", char, i)
            i += 1
        elif char == '"':
            phrase, end = _read_phrase(text, i)
            yield _Token("phrase", text[i:end], i, value=phrase, quoted=True)
            i = end
        elif char == "-" and (i + 1 >= n or text[i + 1].isspace() or text[i + 1] == ")"):
            raise _problem(f"'-' at position {i} must be directly followed by a term (-word)")
        elif char == "-":
            yield _Token("not", char, i)
            i += 1
        else:
            start = i
            while i < n and not text[i].isspace() and text[i] not in '()"':
                i += 1
            word = text[start:i]
            match = _OPERATOR.fullmatch(word)
            if match and match.group(1).lower() in OPERATORS:
                name, value, quoted = match.group(1).lower(), match.group(2), False
                if not value and i < n and text[i] == '"':
                    value, i = _read_phrase(text, i)
                    quoted = True
                if not value.strip():
                    raise _problem(
                        f'{name}: at position {start} needs a value (a word or a "quoted phrase")'
                    )
                yield _Token("op", text[start:i], start, name=name, value=value, quoted=quoted)
            elif word == "OR":
                yield _Token("or", word, start)
            elif word == "AND":
                yield _Token("and", word, start)
            else:
                yield _Token("word", word, start, value=word)


# --- parser ---------------------------------------------------------------------------------


class _Parser:
    def __init__(self, text: str, now: datetime) -> None:
        self.text = text
        self.now = now
        self.tokens = list(_tokens(text))
        self.i = 0
        self.depth = 0
        self.terms = 0
        self.names_folder = False

    def peek(self) -> _Token | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take(self) -> _Token:
        token = self.tokens[self.i]
        self.i += 1
        return token

    def parse(self) -> SearchQuery:
        if not self.tokens:
            return SearchQuery(TRUE, False)
        tree = self.parse_or()
        extra = self.peek()
        if extra is not None:  # only a stray ")" can stop parse_or early
            raise _problem(f"unexpected ')' at position {extra.pos}: no '(' to close")
        return SearchQuery(tree, self.names_folder)

    def parse_or(self) -> Node:
        nodes = [self.parse_and()]
        while (token := self.peek()) is not None and token.kind == "or":
            self.take()
            after = self.peek()
            if after is None or after.kind in ("or", "rparen"):
                raise _problem(f"OR at position {token.pos} needs a term on both sides")
            nodes.append(self.parse_and())
        return nodes[0] if len(nodes) == 1 else Or(tuple(nodes))

    def parse_and(self) -> Node:
        nodes: list[Node] = []
        while (token := self.peek()) is not None and token.kind not in ("or", "rparen"):
            if token.kind == "and":
                self.take()
                after = self.peek()
                if not nodes or after is None or after.kind in ("or", "rparen", "and"):
                    raise _problem(f"AND at position {token.pos} needs a term on both sides")
                continue
            nodes.append(self.parse_unary())
        if not nodes:
            token = self.peek()
            if token is None:
                raise _problem("the query ends where a term was expected")
            if token.kind == "or":
                raise _problem(f"OR at position {token.pos} needs a term on both sides")
            raise _problem(f"unexpected ')' at position {token.pos}: expected a term")
        return nodes[0] if len(nodes) == 1 else And(tuple(nodes))

    def parse_unary(self) -> Node:
        token = self.peek()
        if token is not None and token.kind == "not":
            self.take()
            if self.peek() is None or self.peek().kind in ("or", "and"):  # type: ignore[union-attr]
                raise _problem(f"'-' at position {token.pos} must be directly followed by a term")
            return Not(self.parse_unary())
        return self.parse_primary()

    def parse_primary(self) -> Node:
        token = self.take()
        if token.kind == "lparen":
            self.depth += 1
            if self.depth > MAX_DEPTH:
                raise _problem(
                    f"parentheses nested deeper than {MAX_DEPTH} at position {token.pos}"
                )
            closing = self.peek()
            if closing is not None and closing.kind == "rparen":
                raise _problem(f"empty parentheses at position {token.pos}")
            if closing is None:
                raise _problem(f"'(' at position {token.pos} is never closed")
            node = self.parse_or()
            closing = self.peek()
            if closing is None or closing.kind != "rparen":
                raise _problem(f"'(' at position {token.pos} is never closed")
            self.take()
            self.depth -= 1
            return node
        self.terms += 1
        if self.terms > MAX_TERMS:
            raise _problem(f"too many terms (more than {MAX_TERMS}) at position {token.pos}")
        if token.kind in ("word", "phrase"):
            return Text(tuple(words(token.value)), token.kind == "phrase")
        if token.kind == "op":
            return self.operator(token)
        raise _problem(f"unexpected {token.text!r} at position {token.pos}")  # pragma: no cover

    # --- operators ---

    def operator(self, token: _Token) -> Node:
        name, value = token.name, token.value.strip()
        where = f"{name}:{value} at position {token.pos}"
        if name in ADDRESS_FIELDS:
            return Cond(ADDRESS_FIELDS[name], "=", address_query_term(value))
        if name == "subject":
            return _all_terms("subject_terms", value)
        if name == "filename":
            return Cond("filename_keys", "=", encode_term(phrase_key(value)))
        if name == "label":
            return Cond("label_keys", "=", label_term(value))
        if name == "in":
            return self.folder(value, where)
        if name == "is":
            flags = {
                "unread": ("read", False),
                "read": ("read", True),
                "starred": ("starred", True),
                "unstarred": ("starred", False),
                # flagged by the spam model (at the user's threshold) but left in the Inbox
                "probable-spam": ("probable_spam", True),
            }
            if value.lower() not in flags:
                raise _problem(
                    f"unknown {where}: use is:unread, is:read, is:starred or is:probable-spam"
                )
            flag, wanted = flags[value.lower()]
            return Cond(flag, "=", wanted)
        if name == "has":
            if value.lower() not in ("attachment", "attachments"):
                raise _problem(f"unknown {where}: use has:attachment")
            return Cond("has_attachment", "=", True)
        if name in ("before", "after"):
            return Cond("received_ms", "<" if name == "before" else ">=", _date_ms(value, where))
        if name in ("older_than", "newer_than"):
            cutoff = self.now - _age(value, where)
            millis = int(cutoff.timestamp() * 1000)
            return Cond("received_ms", "<" if name == "older_than" else ">=", millis)
        size = _size(value, where)
        return Cond("size", ">" if name == "larger" else "<", size)

    def folder(self, value: str, where: str) -> Node:
        self.names_folder = True
        folded = value.lower()
        if folded in ("anywhere", "all"):
            return TRUE
        if value.upper() in FOLDERS:
            return Cond("folder", "=", value.upper())
        return Cond("label_keys", "=", label_term(value))  # in:Work is label:Work, as in Gmail


def _all_terms(field_name: str, value: str) -> Node:
    terms = [encode_term(w) for w in words(value)]
    if not terms:
        return TRUE
    nodes = tuple(Cond(field_name, "=", t) for t in dict.fromkeys(terms))
    return nodes[0] if len(nodes) == 1 else And(nodes)


def _date_ms(value: str, where: str) -> int:
    match = _DATE.fullmatch(value)
    if not match:
        raise _problem(f"bad date in {where}: use YYYY/MM/DD")
    try:
        day = datetime(int(match[1]), int(match[2]), int(match[3]), tzinfo=UTC)
    except ValueError as e:
        raise _problem(f"bad date in {where}: {e}") from None
    return int(day.timestamp() * 1000)


def _age(value: str, where: str) -> timedelta:
    match = _AGE.fullmatch(value)
    if not match:
        raise _problem(f"bad age in {where}: use a number and d, m or y (older_than:2d)")
    days = int(match[1]) * AGE_UNITS[match[2].lower()]
    if days > 200 * 365:
        raise _problem(f"age too large in {where}")
    return timedelta(days=days)


def _size(value: str, where: str) -> int:
    match = _SIZE.fullmatch(value)
    if not match:
        raise _problem(f"bad size in {where}: use a number of bytes, or K or M (larger:10M)")
    return int(match[1]) * SIZE_UNITS[(match[2] or "").lower()]


def parse_query(text: str, *, now: datetime) -> SearchQuery:
    """Parse a Gmail-style query; ``now`` anchors ``older_than:``/``newer_than:``."""
    if len(text) > MAX_QUERY_CHARS:
        raise _problem(f"query longer than {MAX_QUERY_CHARS} characters")
    if any(ord(c) < 32 and not c.isspace() for c in text):
        raise _problem("control characters are not allowed in a query")
    return _Parser(text, now).parse()


# --- normal form and compilation -------------------------------------------------------------


def _text_conditions(node: Text) -> Node:
    if not node.terms:
        return TRUE  # punctuation only: matches like an absent term
    conds = tuple(Cond("terms", "=", encode_term(t)) for t in dict.fromkeys(node.terms))
    return conds[0] if len(conds) == 1 else And(conds)


def normal_form(node: Node, negated: bool = False) -> Node:
    """Negation normal form with constants folded: only Cond leaves, And, Or, TRUE, FALSE."""
    if isinstance(node, Not):
        return normal_form(node.node, not negated)
    if isinstance(node, Text):
        return normal_form(_text_conditions(node), negated)
    if isinstance(node, Cond):
        if not negated:
            return node
        if isinstance(node.value, bool):
            return Cond(node.field, "=", not node.value)
        return Cond(node.field, _OPPOSITE[node.op], node.value)
    conjunction = isinstance(node, And) != negated
    parts = [normal_form(n, negated) for n in node.nodes]
    flat: list[Node] = []
    for part in parts:
        same = And if conjunction else Or
        if isinstance(part, same):
            flat.extend(part.nodes)  # also drops the neutral constant (empty And/Or)
        elif isinstance(part, And | Or) and not part.nodes:
            return part  # the absorbing constant: FALSE in an And, TRUE in an Or
        else:
            flat.append(part)
    unique = tuple(dict.fromkeys(flat))
    if len(unique) == 1:
        return unique[0]
    return And(unique) if conjunction else Or(unique)


def _value(value: str | int | bool) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    # Terms are encoded (search_terms.encode_term): no backtick can occur inside. The check
    # makes that an invariant of the compiler rather than of its callers.
    if "`" in value:
        raise ValueError("a filter value may not contain a backtick")
    return f"`{value}`"


def filter_string(node: Node, top: bool = True) -> str:
    """Typesense ``filter_by`` for a tree in normal form ("" for TRUE)."""
    if isinstance(node, Cond):
        return f"{node.field}:{node.op}{_value(node.value)}"
    if isinstance(node, Not | Text):
        raise ValueError("filter_string needs a tree in normal form")
    if not node.nodes:
        return "" if isinstance(node, And) else FALSE_FILTER
    joiner = " && " if isinstance(node, And) else " || "
    inner = joiner.join(filter_string(n, top=False) for n in node.nodes)
    return inner if top else f"({inner})"


def _q_text(tree: Node) -> tuple[str, Node]:
    """Top-level positive words/phrases for ``q`` (and negated phrases, which only ``q`` can
    express exactly); returns the q string and the tree left for the filter."""
    parts = list(tree.nodes) if isinstance(tree, And) else [tree]
    wanted: list[str] = []
    excluded: list[str] = []
    kept: list[Node] = []
    for part in parts:
        if isinstance(part, Text) and part.terms:
            wanted.append(
                f'"{" ".join(part.terms)}"'
                if part.phrase and len(part.terms) > 1
                else " ".join(part.terms)
            )
        elif (
            isinstance(part, Not)
            and isinstance(part.node, Text)
            and part.node.phrase
            and len(part.node.terms) > 1
        ):
            excluded.append(f'-"{" ".join(part.node.terms)}"')
            continue  # exact phrase exclusion: the term filter would exclude too much
        kept.append(part)
    return " ".join((wanted or ["*"]) + excluded), And(tuple(kept))


def compile_query(query: SearchQuery) -> CompiledSearch:
    """Compile a parsed query: ``q`` (``*`` when no text), the user's ``filter_by``, the tree."""
    q, rest = _q_text(query.tree)
    if not query.names_folder:
        rest = And((rest, *(Not(Cond("folder", "=", f)) for f in HIDDEN_FOLDERS)))
    conditions = normal_form(rest)
    return CompiledSearch(q=q, filter_by=filter_string(conditions), conditions=conditions)


def owner_filter(owner_id: str) -> str:
    """The isolation clause; the owner id is a 24-hex ObjectId, never user text."""
    if not re.fullmatch(r"[0-9a-f]{24}", owner_id):
        raise ValueError("owner must be an ObjectId in hex")
    return f"owner:=`{owner_id}`"


def viewer_filter(owner_id: str, *parts: str) -> str:
    """``owner && (part) && (part)``: user parts are parenthesized, so whatever they contain
    stays inside the conjunction with the owner clause."""
    return " && ".join([owner_filter(owner_id), *(f"({p})" for p in parts if p)])


# --- live state -------------------------------------------------------------------------------

LIVE_FIELDS = ("folder", "label_keys", "read", "starred", "probable_spam")


def live_values(item: dict[str, Any]) -> dict[str, Any]:
    """The state fields of a stored mailbox item, spelled as in the index."""
    return {
        "folder": item.get("folder"),
        "read": bool(item.get("read")),
        "starred": bool(item.get("starred")),
        "probable_spam": bool((item.get("spam") or {}).get("probable")),
        "label_keys": {label_term(label) for label in item.get("labels") or ()},
    }


def live_verdict(node: Node, values: dict[str, Any]) -> bool | None:
    """Does the item's *current* state satisfy the query? None when it depends on content.

    Three-valued (Kleene) logic over a tree in normal form: state leaves (folder, labels,
    read, starred, probable_spam) are decided from MongoDB, content leaves are unknown. A False
    means the index is behind a change (moved, relabelled, read, a flag answered) and the hit
    must not be shown.
    """
    if isinstance(node, Cond):
        if node.field not in LIVE_FIELDS:
            return None
        current = values[node.field]
        if node.field == "label_keys":
            return (node.value in current) == (node.op == "=")
        return (current == node.value) == (node.op == "=")
    if not isinstance(node, And | Or):
        return None
    verdicts = [live_verdict(n, values) for n in node.nodes]
    decisive = isinstance(node, Or)  # True decides an Or, False decides an And
    if decisive in verdicts:
        return decisive
    if None in verdicts:
        return None
    return not decisive
