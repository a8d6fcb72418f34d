"""The run filter and sort language: parse trees, errors with their columns, and properties."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from molen.errors import FilterSyntaxError, UsageError
from molen.query import (
    ATTRIBUTES,
    And,
    Comparison,
    Field,
    Filter,
    Not,
    Or,
    SortKey,
    parse_filter,
    parse_sort,
)


def m(name: str) -> Field:
    return Field("metrics", name)


def p(name: str) -> Field:
    return Field("params", name)


def t(name: str) -> Field:
    return Field("tags", name)


def attr(name: str) -> Field:
    return Field("attributes", name)


def epoch_ms(*args: int, tz: timezone = timezone.utc) -> int:
    return int(datetime(*args, tzinfo=tz).timestamp() * 1000)


A = Comparison(m("a"), ">", 1.0)
B = Comparison(m("b"), "<", 2.0)
C = Comparison(m("c"), "=", 3.0)


# --------------------------------------------------------------------------- parse trees


@pytest.mark.parametrize(
    ("text", "tree"),
    [
        (
            "metrics.auc > 0.9 and params.max_depth = '8'",
            And((Comparison(m("auc"), ">", 0.9), Comparison(p("max_depth"), "=", "8"))),
        ),
        (
            "metrics.auc > 0.9 and params.max_depth = '8' and status = 'FINISHED'",
            And(
                (
                    Comparison(m("auc"), ">", 0.9),
                    Comparison(p("max_depth"), "=", "8"),
                    Comparison(attr("status"), "=", "FINISHED"),
                )
            ),
        ),
        # precedence: not > and > or
        ("metrics.a > 1 or metrics.b < 2 and metrics.c = 3", Or((A, And((B, C))))),
        ("metrics.a > 1 and metrics.b < 2 or metrics.c = 3", Or((And((A, B)), C))),
        ("(metrics.a > 1 or metrics.b < 2) and metrics.c = 3", And((Or((A, B)), C))),
        ("not metrics.a > 1 and metrics.b < 2", And((Not(A), B))),
        ("not (metrics.a > 1 and metrics.b < 2)", Not(And((A, B)))),
        ("not not metrics.a > 1", Not(Not(A))),
        ("((metrics.a > 1))", A),
        ("metrics.a > 1 OR metrics.b < 2 Or metrics.c = 3", Or((A, B, C))),
        ("NOT metrics.a > 1 AND metrics.b < 2", And((Not(A), B))),
        # operators and their canonical names
        ("metrics.a == 1", Comparison(m("a"), "=", 1.0)),
        ("metrics.a <> 1", Comparison(m("a"), "!=", 1.0)),
        ("metrics.a != 1", Comparison(m("a"), "!=", 1.0)),
        ("metrics.a<=-1.5e3", Comparison(m("a"), "<=", -1500.0)),
        ("metrics.a >= .5", Comparison(m("a"), ">=", 0.5)),
        ("params.opt like 'ad%'", Comparison(p("opt"), "like", "ad%")),
        ("params.opt ILIKE 'AD%'", Comparison(p("opt"), "ilike", "AD%")),
        ("metrics.a in (1, 2.5, 3)", Comparison(m("a"), "in", (1.0, 2.5, 3.0))),
        ("params.opt not in ('adam', 'sgd')", Comparison(p("opt"), "not_in", ("adam", "sgd"))),
        ("tags.team IN ('x')", Comparison(t("team"), "in", ("x",))),
        ("tags.note is null", Comparison(t("note"), "is_null", None)),
        ("tags.note IS NOT NULL", Comparison(t("note"), "not_null", None)),
        ("metrics.auc is not null", Comparison(m("auc"), "not_null", None)),
        # quoted names
        ("metrics.`val/loss` < 0.2", Comparison(m("val/loss"), "<", 0.2)),
        ('metrics."val loss" < 0.2', Comparison(m("val loss"), "<", 0.2)),
        ("params.`learning rate` = '0.1'", Comparison(p("learning rate"), "=", "0.1")),
        ("metrics.val-loss < 1", Comparison(m("val-loss"), "<", 1.0)),
        ("metrics.a.b > 1", Comparison(m("a.b"), ">", 1.0)),
        # kind spellings
        ("metric.a > 1", A),
        ("param.x = 'y'", Comparison(p("x"), "=", "y")),
        ("tag.x = 'y'", Comparison(t("x"), "=", "y")),
        ("attributes.status = 'RUNNING'", Comparison(attr("status"), "=", "RUNNING")),
        ("attr.status = 'RUNNING'", Comparison(attr("status"), "=", "RUNNING")),
        ("Status = 'RUNNING'", Comparison(attr("status"), "=", "RUNNING")),
        # string literals
        ("params.s = 'it''s'", Comparison(p("s"), "=", "it's")),
        ("params.s = 'a\\'b'", Comparison(p("s"), "=", "a'b")),
        ('params.s = "say \\"hi\\""', Comparison(p("s"), "=", 'say "hi"')),
        ("params.s = ''", Comparison(p("s"), "=", "")),
        # aliases
        ("id = 'abc'", Comparison(attr("run_id"), "=", "abc")),
        ("run = 'abc'", Comparison(attr("run_id"), "=", "abc")),
        ("run_name like 'exp-%'", Comparison(attr("name"), "like", "exp-%")),
        ("parent_id is null", Comparison(attr("parent_id"), "is_null", None)),
        # numeric attributes stay integers where they can
        ("duration > 1000", Comparison(attr("duration"), ">", 1000)),
        ("duration < 2.5", Comparison(attr("duration"), "<", 2.5)),
        ("start_time >= 1700000000000", Comparison(attr("start_time"), ">=", 1700000000000)),
        # times as ISO strings become epoch milliseconds, UTC unless an offset is given
        ("start_time >= '2026-11-01'", Comparison(attr("start_time"), ">=", epoch_ms(2026, 11, 1))),
        (
            "end_time < '2026-11-01T12:30:15'",
            Comparison(attr("end_time"), "<", epoch_ms(2026, 11, 1, 12, 30, 15)),
        ),
        (
            "start_time >= '2026-11-01T00:00:00+01:00'",
            Comparison(attr("start_time"), ">=", epoch_ms(2026, 10, 31, 23)),
        ),
        ("\n metrics.a>1\t", A),
    ],
)
def test_parse_tree(text: str, tree: Filter) -> None:
    assert parse_filter(text) == tree


def test_iso_date_is_utc_epoch_milliseconds() -> None:
    tree = parse_filter("start_time >= '2026-11-01'")
    assert isinstance(tree, Comparison)
    assert tree.value == 1793491200000
    assert isinstance(tree.value, int)


def test_field_str() -> None:
    assert str(m("auc")) == "metrics.auc"
    assert str(attr("status")) == "status"


# --------------------------------------------------------------------------- errors


def syntax_error(text: str) -> FilterSyntaxError:
    with pytest.raises(FilterSyntaxError) as info:
        parse_filter(text)
    return info.value


@pytest.mark.parametrize(
    ("text", "column", "words"),
    [
        ("metrics.auc >", 14, "expected a value"),
        ("metrics.auc > 0.9 and", 22, "expected a field"),
        ("metrics.auc > 'x'", 15, "is a number"),
        ("metrics.auc in (1, 'x')", 20, "is a number"),
        ("params.depth = 8", 16, "quote the value"),
        ("tags.team != 3", 14, "quote the value"),
        ("status = 1", 10, "quote the value"),
        ("foo = 1", 1, "unknown field 'foo'"),
        ("metrics.a > 1 and bar < 2", 19, "unknown field 'bar'"),
        ("(metrics.a > 1", 15, "expected ')'"),
        ("metrics.a > 1)", 14, "expected 'and', 'or' or the end"),
        ("metrics.auc > 0.9 ;", 19, "unexpected character ';'"),
        ("metrics.auc > 0.9 && metrics.b < 1", 19, "unexpected character '&'"),
        ("", 1, "empty filter"),
        ("   ", 4, "empty filter"),
        ("metrics.a like '1%'", 11, "like compares text"),
        ("params.p < 'x'", 10, "is text"),
        ("metrics.a not > 1", 15, "expected 'in' after 'not'"),
        ("metrics.a is 1", 14, "expected 'null'"),
        ("metrics.a 1", 11, "expected a comparison"),
        ("metrics.a", 10, "expected a comparison"),
        ("metrics.a in 1", 14, "expected '('"),
        ("metrics.a in (1 2)", 17, "expected ')'"),
        ("metrics.a in ()", 15, "expected a value"),
        ("duration > '1h'", 12, "milliseconds"),
        ("start_time > 'yesterday'", 14, "not an ISO date"),
        ("metrics.`` > 1", 1, "empty metric name"),
        ("metrics. > 1", 10, "expected a metric name"),
        ("> 1", 1, "expected a field"),
        ("'x' = 1", 1, "expected a field"),
        ("params.x = 'unterminated", 12, "unexpected character"),
        ("metrics.a > 1 metrics.b > 2", 15, "expected 'and', 'or' or the end"),
    ],
)
def test_filter_errors_have_the_right_column(text: str, column: int, words: str) -> None:
    error = syntax_error(text)
    assert error.column == column
    assert error.text == text
    assert words in error.message
    assert f"at column {column}" in str(error)
    # the message shows the filter and a caret under the column
    lines = str(error).splitlines()
    assert lines[1] == f"  {text}"
    assert lines[2] == "  " + " " * (column - 1) + "^"


def test_param_compared_with_number_hints_to_quote() -> None:
    error = syntax_error("params.depth = 8")
    assert "params.depth = '8'" in error.message


def test_unknown_attribute_lists_the_known_ones() -> None:
    error = syntax_error("foo = 1")
    for name in ATTRIBUTES:
        assert name in error.message


def test_filter_syntax_error_is_a_usage_error() -> None:
    error = syntax_error("metrics.auc >")
    assert isinstance(error, UsageError)
    assert error.exit_code == 2
    assert error.http_status == 400


# --------------------------------------------------------------------------- sort keys


@pytest.mark.parametrize(
    ("text", "keys"),
    [
        ("-metrics.auc, start_time", [SortKey(m("auc"), True), SortKey(attr("start_time"), False)]),
        ("metrics.auc desc", [SortKey(m("auc"), True)]),
        ("metrics.auc DESC, params.lr ASC", [SortKey(m("auc"), True), SortKey(p("lr"), False)]),
        ("metrics.auc asc", [SortKey(m("auc"), False)]),
        ("+metrics.auc", [SortKey(m("auc"), False)]),
        ("  -  metrics.auc  ", [SortKey(m("auc"), True)]),
        ("-metrics.auc asc", [SortKey(m("auc"), False)]),  # an explicit direction wins
        ("id,run_name", [SortKey(attr("run_id")), SortKey(attr("name"))]),
        ("-metrics.`val/loss`", [SortKey(m("val/loss"), True)]),
        ("tags.team", [SortKey(t("team"))]),
        ("duration desc", [SortKey(attr("duration"), True)]),
    ],
)
def test_parse_sort(text: str, keys: list[SortKey]) -> None:
    assert parse_sort(text) == keys


@pytest.mark.parametrize(
    ("text", "column", "words"),
    [
        ("", 1, "empty sort key"),
        ("metrics.auc,", 13, "empty sort key"),
        ("metrics.auc, ,start_time", 14, "empty sort key"),
        ("foo", 1, "unknown field 'foo'"),
        ("metrics.auc, bogus", 14, "unknown field 'bogus'"),
        ("metrics.auc sideways", 13, "unexpected 'sideways'"),
        ("metrics.auc desc desc", 18, "unexpected 'desc'"),
        ("metrics.", 9, "expected a metric name"),
    ],
)
def test_sort_errors_have_the_right_column(text: str, column: int, words: str) -> None:
    with pytest.raises(FilterSyntaxError) as info:
        parse_sort(text)
    assert info.value.column == column
    assert words in info.value.message
    assert info.value.text == text


@pytest.mark.parametrize(
    ("text", "column"),
    [
        ("-foo", 2),  # the unknown field starts after the '-'
        ("metrics.auc, -bogus", 15),
        ("metrics.auc, - bogus", 16),
    ],
)
def test_sort_error_column_points_at_the_field_after_a_minus(text: str, column: int) -> None:
    with pytest.raises(FilterSyntaxError) as info:
        parse_sort(text)
    assert "unknown field" in info.value.message
    assert info.value.column == column
    assert text[column - 1] not in "- "


def test_sort_quoted_name_with_space_and_direction() -> None:
    """Back-quoted names may hold spaces in filters; a sort on one must accept a direction too."""
    assert parse_sort("metrics.`val loss` desc") == [SortKey(m("val loss"), True)]


def test_sort_quoted_name_with_comma() -> None:
    assert parse_sort("-metrics.`a,b`, start_time") == [
        SortKey(m("a,b"), True),
        SortKey(attr("start_time")),
    ]


# --------------------------------------------------------------------------- properties


@dataclass(frozen=True)
class Case:
    """A generated filter: its text and the tree it must parse to."""

    text: str
    tree: Filter
    leaf: bool = True


def quote_single(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def quote_double(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


_plain_names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_\-]{0,8}", fullmatch=True)
_quoted_names = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="`"), min_size=1, max_size=10
)
_strings = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12)
_numbers = st.one_of(
    st.integers(min_value=-(10**12), max_value=10**12).map(float),
    st.floats(allow_nan=False, allow_infinity=False),
)


@st.composite
def field_texts(draw: st.DrawFn, kinds: tuple[str, ...]) -> tuple[str, Field]:
    spelled = draw(st.sampled_from(kinds))
    kind = {"metric": "metrics", "param": "params", "tag": "tags"}[spelled.lower().rstrip("s")]
    if draw(st.booleans()):
        name = draw(_plain_names)
        return f"{spelled}.{name}", Field(kind, name)
    name = draw(_quoted_names)
    return f"{spelled}.`{name}`", Field(kind, name)


@st.composite
def number_comparisons(draw: st.DrawFn) -> Case:
    text, field = draw(field_texts(("metrics", "metric", "METRICS")))
    choice = draw(st.sampled_from(["op", "in", "null"]))
    if choice == "op":
        op = draw(st.sampled_from(["=", "==", "!=", "<>", "<", "<=", ">", ">="]))
        value = draw(_numbers)
        canonical = {"==": "=", "<>": "!="}.get(op, op)
        return Case(f"{text} {op} {value!r}", Comparison(field, canonical, value))
    if choice == "in":
        values = draw(st.lists(_numbers, min_size=1, max_size=4))
        negated = draw(st.booleans())
        body = ", ".join(repr(v) for v in values)
        return Case(
            f"{text} {'not in' if negated else 'in'} ({body})",
            Comparison(field, "not_in" if negated else "in", tuple(values)),
        )
    negated = draw(st.booleans())
    return Case(
        f"{text} is {'not ' if negated else ''}null",
        Comparison(field, "not_null" if negated else "is_null", None),
    )


@st.composite
def text_comparisons(draw: st.DrawFn) -> Case:
    text, field = draw(field_texts(("params", "param", "tags", "tag")))
    quote = draw(st.sampled_from([quote_single, quote_double]))
    if draw(st.booleans()):
        op = draw(st.sampled_from(["=", "!=", "like", "ILIKE"]))
        value = draw(_strings)
        canonical = {"==": "=", "<>": "!="}.get(op, op).lower()
        return Case(f"{text} {op} {quote(value)}", Comparison(field, canonical, value))
    values = draw(st.lists(_strings, min_size=1, max_size=3))
    negated = draw(st.booleans())
    body = ",".join(quote(v) for v in values)
    return Case(
        f"{text} {'NOT IN' if negated else 'IN'} ({body})",
        Comparison(field, "not_in" if negated else "in", tuple(values)),
    )


@st.composite
def attribute_comparisons(draw: st.DrawFn) -> Case:
    name = draw(st.sampled_from(["status", "name", "run_id", "experiment", "user", "parent_id"]))
    value = draw(_strings)
    prefix = draw(st.sampled_from(["", "attributes.", "attr."]))
    op = draw(st.sampled_from(["=", "!=", "like", "<", ">="]))
    return Case(f"{prefix}{name} {op} {quote_single(value)}", Comparison(attr(name), op, value))


@st.composite
def time_comparisons(draw: st.DrawFn) -> Case:
    name = draw(st.sampled_from(["start_time", "end_time"]))
    moment = draw(
        st.datetimes(
            min_value=datetime(1971, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(timezone.utc)
        )
    )
    moment = moment.replace(microsecond=moment.microsecond // 1000 * 1000)
    expected = int(moment.timestamp() * 1000)
    if draw(st.booleans()):
        return Case(f"{name} >= {expected}", Comparison(attr(name), ">=", expected))
    return Case(f"{name} < '{moment.isoformat()}'", Comparison(attr(name), "<", expected))


def combine(children: st.SearchStrategy[Case]) -> st.SearchStrategy[Case]:
    def junction(kind: str, keyword: str, parts: list[Case]) -> Case:
        texts = [c.text if c.leaf else f"({c.text})" for c in parts]
        node = And(tuple(c.tree for c in parts)) if kind == "and" else Or(tuple(c.tree for c in parts))
        return Case(f" {keyword} ".join(texts), node, leaf=False)

    def negation(child: Case) -> Case:
        return Case(f"not {child.text}" if child.leaf else f"NOT ({child.text})", Not(child.tree), leaf=False)

    def parenthesised(child: Case) -> Case:
        return Case(f"( {child.text} )", child.tree, leaf=True)

    return st.one_of(
        st.builds(
            junction,
            st.just("and"),
            st.sampled_from(["and", "AND", "And"]),
            st.lists(children, min_size=2, max_size=3),
        ),
        st.builds(
            junction,
            st.just("or"),
            st.sampled_from(["or", "OR"]),
            st.lists(children, min_size=2, max_size=3),
        ),
        st.builds(negation, children),
        st.builds(parenthesised, children),
    )


filters = st.recursive(
    st.one_of(number_comparisons(), text_comparisons(), attribute_comparisons(), time_comparisons()),
    combine,
    max_leaves=8,
)


@settings(max_examples=300, deadline=None)
@given(case=filters)
def test_property_well_formed_filters_parse_to_their_tree(case: Case) -> None:
    first = parse_filter(case.text)
    assert first == case.tree
    assert parse_filter(case.text) == first  # deterministic


def _check_outcome(text: str, tree: object) -> None:
    assert isinstance(tree, (Comparison, And, Or, Not))


@settings(max_examples=500, deadline=None)
@given(text=st.text(max_size=80))
def test_property_arbitrary_text_parses_or_raises_filter_syntax_error(text: str) -> None:
    try:
        tree = parse_filter(text)
    except FilterSyntaxError as error:
        assert 1 <= error.column <= len(text) + 1
        assert error.text == text
    else:
        _check_outcome(text, tree)


_FRAGMENTS = [
    "metrics.auc", "params.p", "tags.t", "metrics.", "`a b`", '"x"', "'s'", "'2026-01-01'", "start_time",
    "duration", "status", "id", "and", "or", "not", "in", "is", "null", "like", "(", ")", ",", "=", "<",
    ">=", "!=", "1", "-1.5e3", "1e999", ".5", "attr", "-", "desc", "''", "\\", "\u0663", " ",
]  # fmt: skip


@settings(max_examples=500, deadline=None)
@given(parts=st.lists(st.sampled_from(_FRAGMENTS), max_size=14), glue=st.sampled_from(["", " "]))
def test_property_token_soup_parses_or_raises_filter_syntax_error(parts: list[str], glue: str) -> None:
    text = glue.join(parts)
    try:
        tree = parse_filter(text)
    except FilterSyntaxError as error:
        assert 1 <= error.column <= len(text) + 1
    else:
        _check_outcome(text, tree)
    try:
        keys = parse_sort(text)
    except FilterSyntaxError as error:
        assert 1 <= error.column <= len(text) + 1
    else:
        assert keys and all(isinstance(k, SortKey) for k in keys)
