"""The documentation is tested: the CLI reference matches the CLI, and every command a page shows
in a ``console`` block runs (the conventions are in ``tests/mddoc.py``)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import mddoc

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
REGENERATE = ".venv/bin/python scripts/cli_reference.py"

#: Variables a page may use in its markers (``<!-- mddoc: replace db.internal $MDDOC_… -->``), the
#: fixture giving each, and the marker its tests then carry.
BACKENDS = {
    "MDDOC_POSTGRES_URL": ("postgres_url", pytest.mark.postgres),  # a fresh PostgreSQL database
    "MDDOC_S3_ENDPOINT": ("s3_endpoint", pytest.mark.s3),  # the moto S3 server, http://host:port
    "MDDOC_S3_BUCKET": ("s3_bucket", pytest.mark.s3),  # a fresh, empty bucket on it
}


def _uses(text: str, variable: str) -> bool:
    return re.search(rf"\$\{{?{variable}\b", text) is not None


def _pages() -> list[object]:
    params = []
    for page in sorted(DOCS.rglob("*.md")):
        if not mddoc.has_console_blocks(page):
            continue
        text = page.read_text(encoding="utf-8")
        marks = {mark.name: mark for variable, (_, mark) in BACKENDS.items() if _uses(text, variable)}
        params.append(pytest.param(page, id=str(page.relative_to(ROOT)), marks=list(marks.values())))
    return params


# -- the pages' commands ------------------------------------------------------------------------


@pytest.mark.parametrize("page", _pages())
def test_page_commands_run(page: Path, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    text = page.read_text(encoding="utf-8")
    env = {
        variable: str(request.getfixturevalue(fixture))
        for variable, (fixture, _) in BACKENDS.items()
        if _uses(text, variable)
    }
    try:
        mddoc.run_page(page, tmp_path, env)
    except (mddoc.DocFailure, mddoc.DocSyntaxError) as exc:
        failure = str(exc)
    else:
        return
    pytest.fail(failure, pytrace=False)  # outside the except: no "during handling…" repeat


def test_the_team_page_is_run() -> None:
    assert "docs/team.md" in [param.id for param in _pages()]  # type: ignore[attr-defined]


# -- the CLI reference --------------------------------------------------------------------------


def test_cli_reference_matches_the_cli() -> None:
    # a narrow, colourful terminal: the pages must not depend on either
    env = {**os.environ, "COLUMNS": "37", "FORCE_COLOR": "1", "TERM": "xterm-256color"}
    result = subprocess.run(
        [sys.executable, "scripts/cli_reference.py", "--check"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if result.returncode != 0:
        pytest.fail(
            f"docs/reference/ no longer matches the CLI's help. Regenerate it and commit the result:\n\n"
            f"    {REGENERATE}\n\n{result.stdout}{result.stderr}",
            pytrace=False,
        )


def test_cli_reference_documents_every_command_and_option() -> None:
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import cli_reference
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    pages = {page.name: page.text for page in cli_reference.generate()}
    root = cli_reference.command_tree()
    for name, command in cli_reference.subcommands(root):
        if cli_reference.is_group(command):
            page = pages[f"{name}.md"]
            for sub_name, sub in cli_reference.subcommands(command):
                assert f"## molen {name} {sub_name}\n" in page
                for param in cli_reference.visible_params(sub):
                    assert cli_reference.names_text(param) in page, (name, sub_name, param.name)
        else:
            assert f"## molen {name}\n" in pages["commands.md"]
            assert f"(commands.md#molen-{name})" in pages["index.md"]
    assert not any("\x1b[" in text for text in pages.values())


# -- the harness itself -------------------------------------------------------------------------

PAGE = """\
# A page

<!-- mddoc: env GREETING=hello -->
<!-- mddoc: replace db.internal $TEST_HOST -->

Save this as `hello.py`:

<!-- mddoc: file hello.py -->
```python
print("connecting to db.internal")
```

```console
$ python hello.py
connecting to 127.0.0.1
$ echo "$GREETING" \\
>   world
hello world
$ cat > notes.txt <<'EOF'
one
EOF
$ mkdir sub && cd sub
$ pwd
.../sub
$ printf 'id 3f2a  took 0.31s\\nrows:   12\\n'
id ... took ...s
rows: 12
```

<!-- mddoc: exit 3 -->
```console
$ (exit 3)
```

```bash
this block is not run
```

<!-- mddoc: skip -->
```console
$ neither is this one
```

<!-- mddoc: run test "$PWD" = "$MDDOC_DIR/sub" && touch hidden -->
"""


def test_a_page_runs_in_one_shell_session(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(PAGE)
    work = tmp_path / "work"
    work.mkdir()
    count = mddoc.run_page(page, work, {"TEST_HOST": "127.0.0.1"})
    assert count == 10  # the export, the file, seven commands, the hidden one; no skipped block
    assert (work / "hello.py").read_text() == 'print("connecting to 127.0.0.1")\n'
    assert (work / "notes.txt").read_text() == "one\n"
    assert (work / "sub" / "hidden").is_file()


def test_parse_reports_the_lines_of_commands_and_expected_output() -> None:
    steps = mddoc.parse(PAGE)
    commands = [step for step in steps if isinstance(step, mddoc.Command)]
    assert [command.line for command in commands] == [14, 16, 19, 22, 23, 25, 32, 44]
    assert commands[1].text == 'echo "$GREETING" \\\n  world'
    assert commands[1].expected == [(18, "hello world")]
    assert commands[2].text == "cat > notes.txt <<'EOF'\none\nEOF"
    assert commands[-2].exit_code == 3 and not commands[-1].shown


def test_a_failing_command_names_the_line_the_status_and_the_output(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("intro\n\n```console\n$ echo fine\nfine\n$ echo broken >&2; (exit 4)\n```\n")
    with pytest.raises(mddoc.DocFailure) as failure:
        mddoc.run_page(page, tmp_path)
    message = str(failure.value)
    assert "page.md:6: the command exited with 4" in message
    assert "$ echo broken >&2; (exit 4)" in message
    assert "exit status: 4" in message and "broken" in message


def test_a_missing_output_line_is_named(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("```console\n$ printf 'b\\na\\n'\na\nb\n```\n")
    with pytest.raises(mddoc.DocFailure) as failure:
        mddoc.run_page(page, tmp_path)
    assert "page.md:4: the output of the command at line 2 lacks this line" in str(failure.value)


def test_the_session_ends_background_jobs_and_times_out(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("```console\n$ sleep 600 &\n$ sleep 5\n```\n")
    with pytest.raises(mddoc.DocFailure, match="timed out"):
        mddoc.run_page(page, tmp_path, timeout=0.5)


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("```console\noutput first\n```\n", ":2: output before the first `$ ` command"),
        ("<!-- mddoc: exit two -->\n", ":1: use <!-- mddoc: exit N -->"),
        ("<!-- mddoc: envv A=1 -->\n", ":1: unknown marker mddoc: envv"),
        ("<!-- mddoc: file a.py -->\nno block\n", ":1: mddoc: file is followed by no block"),
        ("```console\n$ cat <<EOF\nnever ends\n```\n", "never terminated"),
        ("text\n```console\n$ ls\n", ":2: the code block opened here is never closed"),
    ],
)
def test_page_mistakes_are_named(text: str, complaint: str) -> None:
    with pytest.raises(mddoc.DocSyntaxError, match=re.escape(complaint)):
        mddoc.parse(text, "page.md")


def test_expected_output_matches_loosely() -> None:
    output = "run       name      status\n3f2a9c01  baseline  FINISHED  0.3s\n"
    assert mddoc.missing_line([(1, "run name status"), (2, "... baseline FINISHED ...")], output) is None
    assert mddoc.missing_line([(1, "baseline"), (2, "run")], output) == (2, "run")
    assert mddoc.missing_line([(1, "..."), (2, "")], "") is None
