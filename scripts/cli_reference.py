"""Write the CLI reference (``docs/reference/*.md``) from the ``molen`` command's own help.

One page per command group (``runs.md``, ``data.md``, …), ``commands.md`` for the top-level
commands that are not groups (``init``, ``repro``, ``serve``…), and ``index.md`` linking them with
the global options. Each command gets its usage line, its help text and a table of its arguments
and options. The pages come from the click command tree Typer builds, never from a rendered
``--help`` screen, so they do not depend on the terminal's width and carry no colour codes;
pages and commands are sorted by name, options keep the order ``--help`` shows.

    .venv/bin/python scripts/cli_reference.py           # (re)write docs/reference/
    .venv/bin/python scripts/cli_reference.py --check   # exit 1 naming each stale page
"""

from __future__ import annotations

import argparse
import difflib
import enum
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ROOT / "docs" / "reference"
REGENERATE = ".venv/bin/python scripts/cli_reference.py"
#: The first line of every generated page; only pages carrying it are ever removed.
MARKER = f"<!-- Generated from the CLI's own help by `{REGENERATE}`: do not edit. -->"
COMMANDS_PAGE = "commands.md"
INDEX_PAGE = "index.md"
DIFF_LINES = 40


@dataclass(frozen=True)
class Page:
    """One generated Markdown file."""

    name: str
    text: str


# -- the command tree ---------------------------------------------------------------------------


def command_tree() -> Any:
    """The click command group of the full ``molen`` app (every group and command registered)."""
    import typer

    from molen.cli.app import build

    return typer.main.get_command(build([]))


def is_group(command: Any) -> bool:
    # Typer may bring its own copy of click, so the group class is not importable reliably.
    return isinstance(getattr(command, "commands", None), dict)


def subcommands(command: Any) -> list[tuple[str, Any]]:
    """The visible subcommands of a group, sorted by name."""
    return sorted((name, sub) for name, sub in command.commands.items() if not getattr(sub, "hidden", False))


def visible_params(command: Any) -> list[Any]:
    return [param for param in command.params if not getattr(param, "hidden", False)]


def is_argument(param: Any) -> bool:
    return getattr(param, "param_type_name", "") == "argument"


# -- rendering pieces ---------------------------------------------------------------------------


def paragraphs(text: str | None) -> list[str]:
    """A help text as Markdown paragraphs: wrapped lines joined; a click ``\\b`` block kept as is."""
    found = []
    for block in (text or "").strip().split("\n\n"):
        lines = [line.rstrip() for line in block.strip("\n").splitlines()]
        if not lines:
            continue
        if lines[0].strip() == "\b":
            found.append("```text\n" + "\n".join(lines[1:]) + "\n```")
        else:
            found.append(" ".join(line.strip() for line in lines if line.strip()))
    return found


def summary(command: Any) -> str:
    """The first paragraph of a command's help (what ``--help`` lists for it)."""
    found = paragraphs(command.help) or paragraphs(command.short_help)
    return found[0] if found and not found[0].startswith("```") else ""


def cell(text: str) -> str:
    """Text made safe for one Markdown table cell."""
    return " ".join(text.split()).replace("|", "\\|")


def code(text: str) -> str:
    return f"`{text}`"


def argument_label(param: Any) -> str:
    label = (param.metavar or param.name).upper()
    if not param.required:
        label = f"[{label}]"
    return label + "..." if param.nargs == -1 else label


def usage(command: Any, path: str) -> str:
    """The usage line, built the classic click way (independent of the click version)."""
    pieces = [path, "[OPTIONS]"]  # at least -h/--help, as click shows it
    pieces += [argument_label(param) for param in visible_params(command) if is_argument(param)]
    if is_group(command):
        pieces.append("COMMAND [ARGS]...")
    return " ".join(pieces)


_TYPE_NAMES = {
    "StringParamType": "text",
    "IntParamType": "integer",
    "FloatParamType": "number",
    "BoolParamType": "boolean",
    "UUIDParameterType": "UUID",
    "Path": "path",
    "TyperPath": "path",
    "File": "file",
    "IntRange": "integer",
    "FloatRange": "number",
}


def _range(param_type: Any) -> str:
    low, high = getattr(param_type, "min", None), getattr(param_type, "max", None)
    low_op = "<" if getattr(param_type, "min_open", False) else "<="
    high_op = "<" if getattr(param_type, "max_open", False) else "<="
    if low is not None and high is not None:
        return f"{low} {low_op} x {high_op} {high}"
    if low is not None:
        return f"x {'>' if low_op == '<' else '>='} {low}"
    if high is not None:
        return f"x {high_op} {high}"
    return ""


def type_text(param: Any) -> str:
    """What a parameter takes: ``flag``, the choices, or the type (with its range)."""
    if getattr(param, "is_flag", False) and not getattr(param, "count", False):
        return "flag"
    if getattr(param, "count", False):
        return "counter"
    param_type = param.type
    kind = type(param_type).__name__
    choices = getattr(param_type, "choices", None)
    if choices is not None:
        text = " \\| ".join(code(str(getattr(choice, "value", choice))) for choice in choices)
    elif kind == "DateTime":
        text = "date/time: " + ", ".join(code(form) for form in param_type.formats)
    elif kind == "Tuple":
        text = " ".join(_TYPE_NAMES.get(type(item).__name__, item.name) for item in param_type.types)
    else:
        text = _TYPE_NAMES.get(kind, str(getattr(param_type, "name", kind)))
        bounds = _range(param_type) if kind.endswith("Range") else ""
        if bounds:
            text += f" ({bounds})"
    if param.metavar and not is_argument(param):
        text = f"{code(param.metavar)}: {text}"
    if getattr(param, "multiple", False):
        text += ", repeatable"
    elif param.nargs == -1:
        text += ", one or more" if param.required else ", any number"
    return text


def _value(value: Any) -> str:
    if isinstance(value, enum.Enum):
        value = value.value
    if isinstance(value, (list, tuple)):
        return ", ".join(_value(item) for item in value)
    return str(value)


def default_text(param: Any) -> str:
    """The default as ``--help`` would show it; ``required`` for required parameters."""
    if param.required:
        return "required"
    show = getattr(param, "show_default", None)
    if isinstance(show, str):
        return cell(show)
    if show is False:
        return ""
    default = param.default
    if callable(default):
        return "computed"
    if getattr(param, "is_flag", False):
        if getattr(param, "secondary_opts", None):
            return code(param.opts[0] if default else param.secondary_opts[0])
        return "on" if default else ""
    if default is None or default == () or default == []:
        return ""
    return code(_value(default))


def names_text(param: Any) -> str:
    if is_argument(param):
        return code(argument_label(param))
    names = [*param.opts, *getattr(param, "secondary_opts", [])]
    names.sort(key=lambda name: (name.startswith("--"), name))  # short forms first, as -h/--help
    return ", ".join(code(name) for name in names)


def help_text(param: Any) -> str:
    text = getattr(param, "help", None) or ""
    envvar = getattr(param, "envvar", None)
    if envvar:
        names = [envvar] if isinstance(envvar, str) else list(envvar)
        text += f" (environment: {', '.join(code(name) for name in names)})"
    return cell(text)


def param_table(params: Iterable[Any]) -> list[str]:
    rows = [
        f"| {names_text(p)} | {type_text(p)} | {default_text(p)} | {help_text(p)} |"
        for p in sorted(params, key=lambda param: not is_argument(param))  # arguments first, stable
    ]
    if not rows:
        return []
    return ["| argument / option | takes | default | meaning |", "| --- | --- | --- | --- |", *rows]


def anchor(title: str) -> str:
    """GitHub's anchor of a heading made of words, spaces and dashes."""
    return "".join(ch for ch in title.lower().replace(" ", "-") if ch.isalnum() or ch in "-_")


def command_section(command: Any, path: str) -> list[str]:
    lines = [f"## {path}", "", "```text", usage(command, path), "```", ""]
    for paragraph in paragraphs(command.help):
        lines += [paragraph, ""]
    if getattr(command, "deprecated", False):
        lines += ["**Deprecated.**", ""]
    table = param_table(visible_params(command))
    if table:
        lines += [*table, ""]
    return lines


def command_links(commands: list[tuple[str, Any]], prefix: str, page: str = "") -> list[str]:
    rows = ["| command | what it does |", "| --- | --- |"]
    for name, command in commands:
        path = f"{prefix} {name}"
        rows.append(f"| [{code(path)}]({page}#{anchor(path)}) | {cell(summary(command))} |")
    return rows


# -- pages --------------------------------------------------------------------------------------


def group_page(name: str, group: Any) -> Page:
    path = f"molen {name}"
    lines = [MARKER, "", f"# {path}", ""]
    for paragraph in paragraphs(group.help):
        lines += [paragraph, ""]
    commands = subcommands(group)
    lines += [*command_links(commands, path), ""]
    table = param_table(visible_params(group))
    if table:
        lines += [f"Options of `{path}` itself, given before the subcommand:", "", *table, ""]
    for sub_name, sub in commands:
        lines += command_section(sub, f"{path} {sub_name}")
    return Page(f"{name}.md", "\n".join(lines).rstrip("\n") + "\n")


def commands_page(commands: list[tuple[str, Any]]) -> Page:
    lines = [MARKER, "", "# Top-level commands", ""]
    lines += ["The commands of `molen` that are not groups of subcommands.", ""]
    lines += [*command_links(commands, "molen"), ""]
    for name, command in commands:
        lines += command_section(command, f"molen {name}")
    return Page(COMMANDS_PAGE, "\n".join(lines).rstrip("\n") + "\n")


def index_page(root: Any, groups: list[tuple[str, Any]], commands: list[tuple[str, Any]]) -> Page:
    lines = [MARKER, "", "# CLI reference", ""]
    lines += [
        "Every command of `molen`, generated from the command's own help (so it says what "
        f"`molen … --help` says). Regenerate it with `{REGENERATE}` after changing a command; "
        "a test fails while it is stale. Every command also takes `-h`, `--help`.",
        "",
        "```text",
        usage(root, "molen"),
        "```",
        "",
    ]
    for paragraph in paragraphs(root.help):
        lines += [paragraph, ""]
    table = param_table(visible_params(root))
    if table:
        lines += ["## Global options", "", "Given before the command: `molen -C path/to/project runs list`."]
        lines += ["", *table, ""]
    lines += ["## Command groups", "", "| group | what it does |", "| --- | --- |"]
    for name, group in groups:
        lines.append(f"| [`molen {name}`]({name}.md) | {cell(summary(group))} |")
    lines += ["", "## Top-level commands", ""]
    lines += [*command_links(commands, "molen", COMMANDS_PAGE), ""]
    return Page(INDEX_PAGE, "\n".join(lines).rstrip("\n") + "\n")


def generate() -> list[Page]:
    """Every page of the reference, sorted by file name."""
    root = command_tree()
    entries = subcommands(root)
    groups = [(name, command) for name, command in entries if is_group(command)]
    commands = [(name, command) for name, command in entries if not is_group(command)]
    clashes = {f"{name}.md" for name, _ in groups} & {COMMANDS_PAGE, INDEX_PAGE}
    if clashes:
        raise SystemExit(f"a command group's page would overwrite {sorted(clashes)[0]}: rename the page")
    pages = [group_page(name, group) for name, group in groups]
    pages += [commands_page(commands), index_page(root, groups, commands)]
    return sorted(pages, key=lambda page: page.name)


# -- writing and checking -----------------------------------------------------------------------


def generated_on_disk(folder: Path) -> dict[str, str]:
    """The pages in ``folder`` this script wrote (they start with :data:`MARKER`)."""
    found = {}
    for path in sorted(folder.glob("*.md")):
        text = path.read_text(encoding="utf-8")
        if text.startswith(MARKER):
            found[path.name] = text
    return found


def differences(pages: list[Page], folder: Path) -> list[tuple[str, str]]:
    """(file name, what is wrong) for each page that differs from a fresh generation."""
    on_disk = generated_on_disk(folder)
    problems = []
    for page in pages:
        path = folder / page.name
        if not path.is_file():
            problems.append((page.name, "missing"))
            continue
        current = path.read_text(encoding="utf-8")
        if current != page.text:
            diff = difflib.unified_diff(
                current.splitlines(), page.text.splitlines(), "on disk", "generated", lineterm="", n=1
            )
            shown = list(diff)
            more = f"\n    … {len(shown) - DIFF_LINES} more diff lines" if len(shown) > DIFF_LINES else ""
            problems.append((page.name, "differs:\n    " + "\n    ".join(shown[:DIFF_LINES]) + more))
    for name in sorted(set(on_disk) - {page.name for page in pages}):
        problems.append((name, "no longer generated (its command group is gone)"))
    return problems


def write(pages: list[Page], folder: Path) -> list[str]:
    """Write the pages that changed and remove generated pages no longer made; what changed."""
    folder.mkdir(parents=True, exist_ok=True)
    changed = []
    for page in pages:
        path = folder / page.name
        if not path.is_file() or path.read_text(encoding="utf-8") != page.text:
            path.write_text(page.text, encoding="utf-8")
            changed.append(f"wrote {shown(path)}")
    for name in sorted(set(generated_on_disk(folder)) - {page.name for page in pages}):
        (folder / name).unlink()
        changed.append(f"removed {shown(folder / name)}")
    return changed


def shown(path: Path) -> str:
    """A path relative to the repository when it is inside it."""
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a page is stale; write nothing")
    parser.add_argument("--output", type=Path, default=REFERENCE, help="folder of the pages")
    args = parser.parse_args(argv)
    pages = generate()
    if args.check:
        problems = differences(pages, args.output)
        for name, what in problems:
            print(f"stale: {shown(args.output / name)}: {what}")
        if problems:
            print(f"The CLI reference is out of date with the CLI. Regenerate it with:\n\n    {REGENERATE}\n")
            return 1
        print(f"the CLI reference is up to date ({len(pages)} pages)")
        return 0
    changed = write(pages, args.output)
    print("\n".join(changed) if changed else f"the CLI reference was up to date ({len(pages)} pages)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
