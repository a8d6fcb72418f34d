"""Run the shell sessions shown in Markdown pages, so every command in the docs is tested.

A fenced block whose info string is ``console`` is a shell session::

    ```console
    $ molen init churn
    Initialised molen project in .../churn
    $ cd churn
    $ molen runs list --format csv \\
    >     --sort -metrics.auc
    run_id,name,...
    ```

* A line starting with ``$ `` is a command. A command line ending in ``\\`` continues on the next
  line (a leading ``> `` prompt there is dropped); a here-document (``<<EOF``, ``<<'EOF'``,
  ``<<-EOF``) takes the lines up to its terminator.
* The lines after a command, up to the next ``$ `` line, are its expected output: each non-empty
  one must appear in what the command printed (stdout and stderr together), in that order, with
  any other lines between them. Runs of spaces count as one space, so table columns may be
  wider or narrower; ``...`` inside a line matches any text on that line (ids, timings, temp
  paths); a line of only ``...`` marks elided output and checks nothing.
* A command must exit 0 unless a marker says otherwise.

Markers are HTML comments on a line of their own, outside code blocks (invisible when the page
is rendered); each acts on what follows it in the page:

``<!-- mddoc: exit N -->``
    the first command of the next ``console`` block must exit with status ``N`` (to check a
    failure in the middle of a session, start a new block there).
``<!-- mddoc: env KEY=VALUE [KEY=VALUE …] -->``
    export these variables for the commands that follow.
``<!-- mddoc: replace TEXT VALUE -->``
    from here on, ``TEXT`` in commands, files and expected output becomes ``VALUE``: a page shows
    a placeholder (``db.internal``) and the test runs against a real server.
``<!-- mddoc: file PATH -->``
    the next fenced block (any language) is written to ``PATH``, relative to the session's
    current folder, instead of being run: "save this as train.py".
``<!-- mddoc: run COMMAND -->``
    run a setup command the reader does not need to see; it must exit 0. It is shell text: its
    variables are the session's own.
``<!-- mddoc: skip -->``
    do not run the next ``console`` block (it needs something tests cannot have).

Values in ``env`` and ``replace`` may name variables of the harness's environment as
``$NAME`` or ``${NAME}`` (a missing one is an error): ``MDDOC_DIR`` (the page's working folder)
and whatever the test passes, such as ``MDDOC_POSTGRES_URL`` in ``tests/test_docs.py``. Markers'
arguments are split like a shell's words, so quote a value with spaces.

The commands of one page run one after another in a single ``bash`` session started in the
page's working folder, so ``cd``, ``export``, variables and functions carry forward, and ``&``
starts a background job that lives until the page ends. Commands read nothing from stdin. The
environment is the caller's, with the current Python's ``bin`` folder first on ``PATH`` (so
``molen`` is this checkout's), ``COLUMNS=200`` (tables as on a wide terminal) and ``NO_COLOR=1``.

Try a page by hand with ``python tests/mddoc.py docs/PAGE.md [--keep]``.
"""

from __future__ import annotations

import contextlib
import os
import queue
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "Command",
    "DocFailure",
    "DocSyntaxError",
    "Env",
    "File",
    "Replace",
    "has_console_blocks",
    "missing_line",
    "parse",
    "run_page",
]

DEFAULT_TIMEOUT = 300.0
_MARKER = re.compile(r"^\s*<!--\s*mddoc:\s*(?P<name>[a-z]+)\s*(?P<args>.*?)\s*-->\s*$")
_FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|~{3,})\s*(?P<info>[^\s`]*)")
_HEREDOC = re.compile(r"(?<!<)<<(?!<)(-?)\s*(['\"]?)([A-Za-z_][A-Za-z0-9_]*)\2")
_VARIABLE = re.compile(r"\$(?:\{(\w+)\}|(\w+))")
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")


class DocSyntaxError(Exception):
    """A page breaks the ``console`` block conventions (the message names the line)."""


class DocFailure(AssertionError):
    """A command of a page failed or printed something else than the page says."""


# -- the steps of a page ------------------------------------------------------------------------


@dataclass
class Command:
    """A command to run; ``expected`` holds (line number, text) of its expected output."""

    line: int
    text: str
    expected: list[tuple[int, str]] = field(default_factory=list)
    exit_code: int = 0
    shown: bool = True  # False for ``mddoc: run`` commands


@dataclass
class File:
    """A fenced block to write to ``path`` (``mddoc: file``)."""

    line: int
    path: str
    content: str


@dataclass
class Env:
    """Variables to export from here on (``mddoc: env``)."""

    line: int
    assignments: list[tuple[str, str]]


@dataclass
class Replace:
    """A placeholder and the value it stands for from here on (``mddoc: replace``)."""

    line: int
    old: str
    new: str


Step = Command | File | Env | Replace


def has_console_blocks(path: Path) -> bool:
    """Whether a Markdown file has a ``console`` block (cheap: no full parse)."""
    text = path.read_text(encoding="utf-8")
    return any(
        (found := _FENCE.match(line)) is not None and found["info"] == "console" for line in text.splitlines()
    )


def parse(text: str, name: str = "<page>") -> list[Step]:
    """The steps of a page, in order; :class:`DocSyntaxError` names the line of a mistake."""
    return _Parser(text.splitlines(), name).steps()


class _Parser:
    """Reads a page line by line: markers, fenced blocks, and what a marker holds for the next."""

    def __init__(self, lines: list[str], name: str) -> None:
        self.lines, self.name = lines, name
        self.found: list[Step] = []
        self.exit: tuple[int, int] | None = None  # (marker line, status) for the next console block
        self.file: tuple[int, str] | None = None  # (marker line, path) for the next fenced block
        self.skip = False

    def steps(self) -> list[Step]:
        index = 0
        while index < len(self.lines):
            marker = _MARKER.match(self.lines[index])
            fence = _FENCE.match(self.lines[index])
            if marker:
                self._marker(marker["name"], marker["args"], index + 1)
                index += 1
            elif fence:
                opened = index + 1
                body, index = _fenced_body(self.lines, index, fence, self.name)
                self._block(fence["info"], body, opened)
            else:
                index += 1
        for leftover, what in ((self.exit, "exit"), (self.file, "file")):
            if leftover is not None:
                raise DocSyntaxError(f"{self.name}:{leftover[0]}: mddoc: {what} is followed by no block")
        return self.found

    def _marker(self, kind: str, args: str, number: int) -> None:
        words = _words(args, self.name, number)
        usage = _USAGE.get(kind)
        if usage is None:
            raise DocSyntaxError(f"{self.name}:{number}: unknown marker mddoc: {kind} ({', '.join(_USAGE)})")
        if not _USAGE_CHECKS[kind](words):
            raise DocSyntaxError(f"{self.name}:{number}: use <!-- mddoc: {usage} -->")
        if kind == "exit":
            self.exit = (number, int(words[0]))
        elif kind == "env":
            pairs = [word.partition("=") for word in words]
            self.found.append(Env(number, [(key, value) for key, _, value in pairs]))
        elif kind == "replace":
            self.found.append(Replace(number, words[0], words[1]))
        elif kind == "file":
            self.file = (number, words[0])
        elif kind == "run":
            self.found.append(Command(number, args, shown=False))
        else:
            self.skip = True

    def _block(self, info: str, body: list[tuple[int, str]], opened: int) -> None:
        if self.file is not None:
            self.found.append(File(self.file[0], self.file[1], "".join(line + "\n" for _, line in body)))
            self.file = None
        elif info == "console" and self.skip:
            self.skip, self.exit = False, None
        elif info == "console":
            commands = _console_block(body, self.name, opened)
            if self.exit is not None:
                commands[0].exit_code = self.exit[1]
                self.exit = None
            self.found += commands


_USAGE = {
    "exit": "exit N",
    "env": "env KEY=VALUE ...",
    "replace": "replace TEXT VALUE",
    "file": "file PATH",
    "run": "run COMMAND",
    "skip": "skip",
}
_USAGE_CHECKS = {
    "exit": lambda words: len(words) == 1 and words[0].isdigit(),
    "env": lambda words: bool(words) and all("=" in word and not word.startswith("=") for word in words),
    "replace": lambda words: len(words) == 2 and bool(words[0]),
    "file": lambda words: len(words) == 1,
    "run": lambda words: bool(words),
    "skip": lambda words: not words,
}


def _words(args: str, name: str, number: int) -> list[str]:
    try:
        return shlex.split(args)
    except ValueError as exc:
        raise DocSyntaxError(f"{name}:{number}: {exc} in the marker's arguments") from None


def _fenced_body(
    lines: list[str], start: int, fence: re.Match[str], name: str
) -> tuple[list[tuple[int, str]], int]:
    """The (line number, text) of a fenced block's content, and the index after its end."""
    indent, mark = len(fence["indent"]), fence["fence"]
    body = []
    index = start + 1
    while index < len(lines):
        line = lines[index]
        if line.strip().startswith(mark[0] * len(mark)) and not line.strip().strip(mark[0]):
            return body, index + 1
        body.append((index + 1, line[indent:] if not line[:indent].strip() else line.lstrip()))
        index += 1
    raise DocSyntaxError(f"{name}:{start + 1}: the code block opened here is never closed")


def _console_block(body: list[tuple[int, str]], name: str, opened: int) -> list[Command]:
    commands: list[Command] = []
    index = 0
    while index < len(body):
        number, line = body[index]
        if not line.startswith("$ "):
            if commands:
                commands[-1].expected.append((number, line))
            elif line.strip():
                raise DocSyntaxError(f"{name}:{number}: output before the first `$ ` command of the block")
            index += 1
            continue
        text = line[2:]
        index += 1
        while text.endswith("\\") and index < len(body):
            continuation = body[index][1]
            text += "\n" + (continuation[2:] if continuation.startswith("> ") else continuation)
            index += 1
        for heredoc in _HEREDOC.finditer(text):
            strip_tabs, terminator = heredoc.group(1) == "-", heredoc.group(3)
            while True:
                if index >= len(body):
                    raise DocSyntaxError(
                        f"{name}:{number}: the here-document {terminator!r} is never terminated"
                    )
                content = body[index][1]
                text += "\n" + content
                index += 1
                if (content.lstrip("\t") if strip_tabs else content) == terminator:
                    break
        commands.append(Command(number, text))
    if not commands:
        raise DocSyntaxError(f"{name}:{opened}: a console block without a `$ ` command")
    return commands


# -- matching output ----------------------------------------------------------------------------


def _normal(text: str) -> str:
    return " ".join(text.split())


def _pattern(expected: str) -> re.Pattern[str]:
    pieces = [re.escape(_normal(piece)) for piece in expected.split("...")]
    return re.compile(".*?".join(pieces))


def missing_line(expected: list[tuple[int, str]], output: str) -> tuple[int, str] | None:
    """The first expected (line number, text) not found, in order, in ``output``; else None."""
    actual = [_normal(line) for line in _ANSI.sub("", output).splitlines()]
    position = 0
    for number, text in expected:
        if not text.strip() or text.strip() == "...":
            continue
        pattern = _pattern(text)
        while position < len(actual) and not pattern.search(actual[position]):
            position += 1
        if position == len(actual):
            return number, text
        position += 1
    return None


# -- running ------------------------------------------------------------------------------------


class ShellSession:
    """One ``bash`` process fed one command at a time; each command's output goes to a file."""

    def __init__(self, cwd: Path, env: Mapping[str, str]) -> None:
        self._scratch = Path(tempfile.mkdtemp(prefix="mddoc-"))
        self._token = f"__mddoc_{uuid.uuid4().hex}__"
        self._count = 0
        self._process = subprocess.Popen(
            ["bash", "--noprofile", "--norc"],
            cwd=cwd,
            env=dict(env),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: closing ends background jobs too
        )
        self._lines: queue.Queue[bytes | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self._process.stdout is not None
        for line in self._process.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def run(self, command: str, timeout: float) -> tuple[int | None, str]:
        """Run ``command`` in the session: (exit status, or None if it timed out; its output)."""
        self._count += 1
        output = self._scratch / f"{self._count}.out"
        script = (
            f"{{ {command}\n}} >{shlex.quote(str(output))} 2>&1 </dev/null\n"
            f"printf '\\n%s %s\\n' {self._token} \"$?\"\n"
        )
        assert self._process.stdin is not None
        try:
            self._process.stdin.write(script.encode())
            self._process.stdin.flush()
        except BrokenPipeError:
            return self._ended(output)
        shell_said = []  # what bash itself printed: syntax errors
        while True:
            try:
                line = self._lines.get(timeout=timeout)
            except queue.Empty:
                return None, self._output(output, shell_said) + f"\n(no exit after {timeout:.0f} s)"
            if line is None:
                return self._ended(output, shell_said)
            text = line.decode(errors="replace")
            if text.startswith(self._token):
                return int(text.split()[1]), self._output(output, shell_said)
            if text.strip():
                shell_said.append(text)

    def _ended(self, output: Path, shell_said: list[str] | None = None) -> tuple[int | None, str]:
        status = self._process.wait()
        return status, self._output(output, shell_said or []) + f"\n(the shell exited with {status})"

    @staticmethod
    def _output(path: Path, shell_said: list[str]) -> str:
        try:
            text = path.read_bytes().decode(errors="replace")
        except FileNotFoundError:
            text = ""
        return _ANSI.sub("", text + "".join(shell_said))

    def close(self) -> None:
        """End the shell and every job it started."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._process.pid, signal.SIGTERM)
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self._process.pid, signal.SIGKILL)
            self._process.wait(timeout=10)
        for stream in (self._process.stdin, self._process.stdout):
            with contextlib.suppress(OSError):
                stream.close()  # type: ignore[union-attr]
        self._reader.join(timeout=10)
        shutil.rmtree(self._scratch, ignore_errors=True)


def session_environment(cwd: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment commands start with (see the module's docstring)."""
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1", **(extra or {})}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["MDDOC_DIR"] = str(cwd)
    return env


def _expand(text: str, env: Mapping[str, str], where: str) -> str:
    def value(found: re.Match[str]) -> str:
        name = found.group(1) or found.group(2)
        if name not in env:
            raise DocFailure(f"{where}: ${name} is not set; the test running the page must provide it")
        return env[name]

    return _VARIABLE.sub(value, text)


def _replace(text: str, replacements: list[tuple[str, str]]) -> str:
    for old, new in replacements:
        text = text.replace(old, new)
    return text


def _indent(text: str, limit: int = 150) -> str:
    lines = text.rstrip("\n").splitlines()
    if len(lines) > limit:
        lines = [f"(… {len(lines) - limit} earlier lines)", *lines[-limit:]]
    return "\n".join("    " + line for line in lines) or "    (no output)"


def _failure(where: str, problem: str, command: str, status: int | None, output: str) -> DocFailure:
    return DocFailure(
        f"{where}: {problem}\n\n  command:\n{_indent('$ ' + command)}\n\n"
        f"  exit status: {'none (timed out)' if status is None else status}\n\n  output:\n{_indent(output)}"
    )


def _as_command(
    step: Command | File | Env, replacements: list[tuple[str, str]], env: Mapping[str, str], where: str
) -> Command:
    """The shell command a step runs, with the page's placeholders replaced."""
    if isinstance(step, Env):
        exports = " ".join(
            f"{key}={shlex.quote(_replace(_expand(value, env, where), replacements))}"
            for key, value in step.assignments
        )
        return Command(step.line, f"export {exports}", shown=False)
    if isinstance(step, File):
        terminator = f"MDDOC_{uuid.uuid4().hex}"
        path = shlex.quote(_replace(step.path, replacements))
        content = _replace(step.content, replacements)
        text = f"mkdir -p \"$(dirname {path})\" && cat > {path} <<'{terminator}'\n{content}{terminator}"
        return Command(step.line, text, shown=False)
    expected = [(number, _replace(line, replacements)) for number, line in step.expected]
    return Command(step.line, _replace(step.text, replacements), expected, step.exit_code, step.shown)


def run_page(
    page: Path,
    cwd: Path,
    env: Mapping[str, str] | None = None,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    echo: bool = False,
) -> int:
    """Run every ``console`` block of ``page`` in ``cwd``; the number of commands run.

    ``env`` adds to the environment (see the module's docstring); ``echo`` prints each command
    with its output as it goes. Raises :class:`DocFailure`
    naming the page's line, the command, its exit status and its output when a command fails or
    misses an expected line, and :class:`DocSyntaxError` for a malformed page.
    """
    try:
        shown_name = str(page.resolve().relative_to(Path.cwd()))
    except ValueError:
        shown_name = str(page)
    steps = parse(page.read_text(encoding="utf-8"), shown_name)
    environment = session_environment(cwd, env)
    replacements: list[tuple[str, str]] = []
    session = ShellSession(cwd, environment)
    count = 0
    try:
        for step in steps:
            where = f"{shown_name}:{step.line}"
            if isinstance(step, Replace):
                replacements.append((step.old, _expand(step.new, environment, where)))
                continue
            command = _as_command(step, replacements, environment, where)
            status, output = session.run(command.text, timeout)
            if echo:
                print(f"{where}: $ {command.text}\n{_indent(output)}\n    (exit {status})", flush=True)
            count += 1
            if status != command.exit_code:
                wanted = f" (the page expects {command.exit_code})" if command.exit_code else ""
                problem = f"the command exited with {status}{wanted}"
                raise _failure(where, problem, command.text, status, output)
            missing = missing_line(command.expected, output)
            if missing is not None:
                raise _failure(
                    f"{shown_name}:{missing[0]}",
                    f"the output of the command at line {command.line} lacks this line "
                    f"(or has it out of order):\n    {missing[1].strip()}",
                    command.text,
                    status,
                    output,
                )
    finally:
        session.close()
    return count


@contextlib.contextmanager
def _folder(keep: bool) -> Iterator[Path]:
    if keep:
        yield Path(tempfile.mkdtemp(prefix="mddoc-page-"))
        return
    with tempfile.TemporaryDirectory(prefix="mddoc-page-") as name:
        yield Path(name)


def main(argv: list[str] | None = None) -> int:
    """``python tests/mddoc.py PAGE... [--keep]``: run pages in fresh folders, showing each
    command and its output (``--keep``: leave the folders for a look)."""
    args = sys.argv[1:] if argv is None else argv
    keep = "--keep" in args
    pages = [Path(arg) for arg in args if arg != "--keep"]
    if not pages:
        print(__doc__)
        return 2
    for page in pages:
        with _folder(keep) as folder:
            try:
                count = run_page(page, folder, echo=True)
            except (DocFailure, DocSyntaxError) as exc:
                print(f"\nFAILED {exc}", file=sys.stderr)
                return 1
            print(f"{page}: {count} commands passed" + (f" (folder kept: {folder})" if keep else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
