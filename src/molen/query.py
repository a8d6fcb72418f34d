"""The run filter and sort language, parsed into a small syntax tree.

Filter grammar (keywords are case-insensitive)::

    filter     := or_expr
    or_expr    := and_expr ("or" and_expr)*
    and_expr   := not_expr ("and" not_expr)*
    not_expr   := "not" not_expr | "(" filter ")" | comparison
    comparison := field OP value
                | field ["not"] "in" "(" value ("," value)* ")"
                | field "is" ["not"] "null"
    field      := ("metrics" | "params" | "tags") "." name | ["attributes" "."] attribute
    name       := word | `back-quoted` | "double-quoted"
    OP         := "=" | "==" | "!=" | "<>" | "<" | "<=" | ">" | ">=" | "like" | "ilike"
    value      := number | 'single-quoted string' | "double-quoted string"

Attributes: ``run_id``, ``name``, ``status``, ``experiment``, ``user``, ``start_time``,
``end_time``, ``duration`` (milliseconds), ``parent_id``. Times compare with milliseconds since
the epoch or an ISO date string (``start_time >= '2026-11-01'``). Params and tags are text and
compare with strings. Example::

    metrics.auc > 0.9 and params.max_depth = '8' and status = 'FINISHED'

Sort keys: a comma-separated list of fields, each optionally prefixed with ``-`` (descending)
or followed by ``asc``/``desc``: ``-metrics.auc, start_time``.

A mistake raises :class:`~molen.errors.FilterSyntaxError` naming the column where it happened.
The tree is compiled to SQLAlchemy expressions by the metadata store; no SQL text is ever built
from user input.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone

from molen.errors import FilterSyntaxError

__all__ = [
    "ATTRIBUTES",
    "And",
    "Comparison",
    "Field",
    "Filter",
    "Not",
    "Or",
    "SortKey",
    "parse_filter",
    "parse_sort",
]

ATTRIBUTES = (
    "run_id",
    "name",
    "status",
    "experiment",
    "user",
    "start_time",
    "end_time",
    "duration",
    "parent_id",
)
_TIME_ATTRIBUTES = {"start_time", "end_time"}
_NUMERIC_ATTRIBUTES = {"start_time", "end_time", "duration"}
_ALIASES = {"id": "run_id", "run_name": "name", "run": "run_id"}
_KINDS = {"metrics", "metric", "params", "param", "tags", "tag", "attributes", "attribute", "attr"}
_COMPARATORS = {"=", "==", "!=", "<>", "<", "<=", ">", ">=", "like", "ilike"}

Value = str | float | int | None


@dataclass(frozen=True)
class Field:
    """A thing a run has: ``kind`` is metrics, params, tags or attributes."""

    kind: str
    name: str

    def __str__(self) -> str:
        return self.name if self.kind == "attributes" else f"{self.kind}.{self.name}"


@dataclass(frozen=True)
class Comparison:
    field: Field
    op: str  # one of = != < <= > >= like ilike in not_in is_null not_null
    value: Value | tuple[Value, ...]


@dataclass(frozen=True)
class And:
    parts: tuple[Filter, ...]


@dataclass(frozen=True)
class Or:
    parts: tuple[Filter, ...]


@dataclass(frozen=True)
class Not:
    part: Filter


Filter = Comparison | And | Or | Not


@dataclass(frozen=True)
class SortKey:
    field: Field
    descending: bool = False


# -- tokens -----------------------------------------------------------------------------------

_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<number>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?(?![\w.]))
  | (?P<string>'(?:[^'\\]|\\.|'')*'|"(?:[^"\\]|\\.)*")
  | (?P<backquoted>`[^`]*`)
  | (?P<sign>[-+])
  | (?P<op><=|>=|!=|<>|==|=|<|>)
  | (?P<punct>[(),.])
  | (?P<word>[A-Za-z_][\w\-]*(?:\.[\w\-]+)*)
    """,
    re.VERBOSE,
)


@dataclass(frozen=True)
class _Token:
    kind: str
    text: str
    column: int  # 1-based


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    position = 0
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None:
            char = text[position]
            raise FilterSyntaxError(f"unexpected character {char!r}", text=text, column=position + 1)
        kind = match.lastgroup or ""
        if kind != "space":
            tokens.append(_Token(kind, match.group(), position + 1))
        position = match.end()
    tokens.append(_Token("end", "", len(text) + 1))
    return tokens


def _unquote(token: _Token) -> str:
    body = token.text[1:-1]
    if token.kind == "backquoted":
        return body
    quote = token.text[0]
    body = body.replace(quote * 2, quote) if quote == "'" else body
    return re.sub(r"\\(.)", r"\1", body)


# -- parser -----------------------------------------------------------------------------------


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokenize(text)
        self.index = 0

    @property
    def current(self) -> _Token:
        return self.tokens[self.index]

    def error(self, message: str, token: _Token | None = None) -> FilterSyntaxError:
        token = token or self.current
        return FilterSyntaxError(message, text=self.text, column=token.column)

    def advance(self) -> _Token:
        token = self.current
        self.index += 1
        return token

    def keyword(self, *words: str) -> bool:
        token = self.current
        if token.kind == "word" and token.text.lower() in words:
            self.index += 1
            return True
        return False

    def expect_punct(self, char: str) -> None:
        if self.current.kind != "punct" or self.current.text != char:
            found = self.current.text or "the end"
            raise self.error(f"expected {char!r} but found {found!r}")
        self.index += 1

    def parse(self) -> Filter:
        if self.current.kind == "end":
            raise self.error("empty filter")
        tree = self.or_expr()
        if self.current.kind != "end":
            raise self.error(f"expected 'and', 'or' or the end, found {self.current.text!r}")
        return tree

    def or_expr(self) -> Filter:
        parts = [self.and_expr()]
        while self.keyword("or"):
            parts.append(self.and_expr())
        return parts[0] if len(parts) == 1 else Or(tuple(parts))

    def and_expr(self) -> Filter:
        parts = [self.not_expr()]
        while self.keyword("and"):
            parts.append(self.not_expr())
        return parts[0] if len(parts) == 1 else And(tuple(parts))

    def not_expr(self) -> Filter:
        if self.keyword("not"):
            return Not(self.not_expr())
        if self.current.kind == "punct" and self.current.text == "(":
            self.advance()
            inner = self.or_expr()
            self.expect_punct(")")
            return inner
        return self.comparison()

    def field(self) -> Field:
        token = self.current
        if token.kind == "end":
            raise self.error("expected a field such as metrics.auc, found the end")
        if token.kind != "word":
            raise self.error(f"expected a field such as metrics.auc, found {token.text!r}")
        self.advance()
        head, _, rest = token.text.partition(".")
        lowered = head.lower()
        if lowered in _KINDS:
            kind = _canonical_kind(lowered)
            if rest:
                name = rest
            else:
                self.expect_punct(".")
                quoted = self.current
                if quoted.kind not in {"backquoted", "string"}:
                    raise self.error(f"expected a {kind[:-1]} name after '{head}.'")
                self.advance()
                name = _unquote(quoted)
            if not name:
                raise self.error(f"empty {kind[:-1]} name", token)
        else:
            kind, name = "attributes", token.text
        if kind == "attributes":
            name = _ALIASES.get(name.lower(), name.lower())
            if name not in ATTRIBUTES:
                known = ", ".join(ATTRIBUTES)
                raise self.error(
                    f"unknown field {token.text!r}; use metrics.NAME, params.NAME, tags.NAME "
                    f"or one of {known}",
                    token,
                )
        return Field(kind, name)

    def value(self, field: Field) -> Value:
        token = self.current
        if token.kind == "number":
            self.advance()
            if field.kind in {"params", "tags"}:
                raise self.error(f"{field} is text: quote the value, e.g. {field} = '{token.text}'", token)
            if field.kind == "attributes" and field.name not in _NUMERIC_ATTRIBUTES:
                raise self.error(f"{field} is text: quote the value", token)
            number = float(token.text)
            return int(number) if number.is_integer() and field.kind == "attributes" else number
        if token.kind == "string":
            self.advance()
            text = _unquote(token)
            if field.kind == "metrics":
                raise self.error(f"{field} is a number: compare it with a number", token)
            if field.kind == "attributes" and field.name in _TIME_ATTRIBUTES:
                return _parse_time(text, self, token)
            if field.kind == "attributes" and field.name == "duration":
                raise self.error("duration is in milliseconds: compare it with a number", token)
            return text
        found = token.text or "the end"
        raise self.error(f"expected a value (a number or a 'quoted string'), found {found!r}")

    def comparison(self) -> Filter:
        field = self.field()
        token = self.current
        if self.keyword("is"):
            negated = self.keyword("not")
            if not self.keyword("null"):
                raise self.error("expected 'null' after 'is'")
            return Comparison(field, "not_null" if negated else "is_null", None)
        negated = self.keyword("not")
        if self.keyword("in"):
            self.expect_punct("(")
            values = [self.value(field)]
            while self.current.kind == "punct" and self.current.text == ",":
                self.advance()
                values.append(self.value(field))
            self.expect_punct(")")
            return Comparison(field, "not_in" if negated else "in", tuple(values))
        if negated:
            raise self.error("expected 'in' after 'not'")
        if token.kind == "op" or (token.kind == "word" and token.text.lower() in _COMPARATORS):
            self.advance()
            op = {"==": "=", "<>": "!="}.get(token.text.lower(), token.text.lower())
        else:
            found = token.text or "the end"
            raise self.error(
                f"expected a comparison (=, !=, <, <=, >, >=, like, in) after {field}, found {found!r}"
            )
        if op in {"like", "ilike"} and field.kind == "metrics":
            raise self.error(f"{op} compares text; {field} is a number", token)
        value = self.value(field)
        if op in {"<", "<=", ">", ">="} and isinstance(value, str) and field.kind != "attributes":
            raise self.error(f"{field} is text: use =, !=, like or in", token)
        return Comparison(field, op, value)


def _canonical_kind(word: str) -> str:
    if word.startswith("metric"):
        return "metrics"
    if word.startswith("param"):
        return "params"
    if word.startswith("tag"):
        return "tags"
    return "attributes"


def _parse_time(text: str, parser: _Parser, token: _Token) -> int:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise parser.error(f"{text!r} is not an ISO date or time (2026-11-01T12:00)", token) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return int(moment.timestamp() * 1000)


def parse_filter(text: str) -> Filter:
    """Parse a run filter (see the module docstring) into its syntax tree.

    Raises :class:`FilterSyntaxError` with the column of the first mistake.
    Example: ``parse_filter("metrics.auc > 0.9 and params.max_depth = '8'")``
    """
    return _Parser(text).parse()


def parse_sort(text: str) -> list[SortKey]:
    """Parse sort keys such as ``-metrics.auc, start_time`` (``-`` or ``desc`` for descending).

    Names are quoted as in filters (``metrics.`val loss` desc``). Raises
    :class:`FilterSyntaxError` with the column of the first mistake.
    """
    parser = _Parser(text)
    keys: list[SortKey] = []
    while True:
        token = parser.current
        if token.kind == "end" or (token.kind == "punct" and token.text == ","):
            raise parser.error("empty sort key")
        descending = False
        if token.kind == "sign":
            descending = token.text == "-"
            parser.advance()
        field = parser.field()
        if parser.keyword("desc"):
            descending = True
        elif parser.keyword("asc"):
            descending = False
        keys.append(SortKey(field, descending))
        if parser.current.kind == "end":
            return keys
        if parser.current.kind == "punct" and parser.current.text == ",":
            parser.advance()
            continue
        raise parser.error(f"unexpected {parser.current.text!r} in sort key; separate keys with ','")
