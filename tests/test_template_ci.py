"""The CI/CD and container files of `molen init` projects (``molen/templates/common``).

Rendered for both tasks as molen renders them, they must parse, match the public schemas of
GitHub workflows and GitLab CI (check-jsonschema's vendored copies, checked with the network cut
off), and every ``molen …`` command they run must name a real command with real options: when
the CLI changes, the templates fail here instead of in a user's first pipeline.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import jinja2
import pytest
import typer
import yaml

import molen
from molen._version import __version__
from molen.cli.app import build

TEMPLATES = Path(molen.__file__).parent / "templates" / "common"
CI_TEMPLATES = [
    ".github/workflows/ci.yml.jinja",
    ".github/workflows/monitor.yml.jinja",
    ".gitlab-ci.yml.jinja",
    ".pre-commit-config.yaml",
    "Dockerfile.jinja",
    ".dockerignore",
    "retrain.sh.jinja",
]
ANSWERS = {
    "classification": {"name": "churn", "target": "churned"},
    # a target that needs quoting in YAML and in the shell
    "regression": {"name": "House_prices", "target": "owner's price (€)"},
}
YAML_FILES = [
    ".github/workflows/ci.yml",
    ".github/workflows/monitor.yml",
    ".gitlab-ci.yml",
    ".pre-commit-config.yaml",
]
GITHUB_ACTIONS = {
    "actions/checkout@v4",
    "actions/setup-python@v5",
    "actions/upload-artifact@v4",
    "docker/login-action@v3",
    "docker/build-push-action@v6",
}
#: check-jsonschema with the network cut off: a schema that fetched a $ref would fail here.
OFFLINE_CHECK_JSONSCHEMA = """
import socket, sys

def refuse(*args, **kwargs):
    raise OSError("network access during an offline schema check")

socket.socket.connect = refuse
socket.getaddrinfo = refuse
sys.argv[0] = "check-jsonschema"
from check_jsonschema import main

main()
"""


def render(relative: str, answers: dict[str, str]) -> str:
    """A template file as `molen init` writes it: ``.jinja`` files rendered strictly, others copied."""
    if not relative.endswith(".jinja"):
        return (TEMPLATES / relative).read_text()
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
    )
    return environment.get_template(relative).render(**answers)


@pytest.fixture(scope="module", params=sorted(ANSWERS))
def project(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The CI/CD files of a rendered project, for each task."""
    task = request.param
    answers = {**ANSWERS[task], "task": task, "python_version": "3.11", "molen_version": __version__}
    root = tmp_path_factory.mktemp(task)
    for relative in CI_TEMPLATES:
        target = root / relative.removesuffix(".jinja")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(render(relative, answers))
    (root / "answers.json").write_text(json.dumps(answers))
    return root


def answers_of(project: Path) -> dict[str, str]:
    return json.loads((project / "answers.json").read_text())


def check_jsonschema(schema: str, *files: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", OFFLINE_CHECK_JSONSCHEMA, "--builtin-schema", schema, *map(str, files)],
        capture_output=True,
        text=True,
        timeout=120,
    )


# -- YAML and the schemas ---------------------------------------------------------------------------


@pytest.mark.parametrize("relative", YAML_FILES)
def test_yaml_parses_with_the_answers_in_place(project: Path, relative: str) -> None:
    text = (project / relative).read_text()
    assert isinstance(yaml.safe_load(text), dict)
    assert "{%" not in text and "{#" not in text
    assert "{{" not in text.replace("${{", "")  # GitHub's own ${{ }} expressions stay
    assert text.endswith("\n") and not text.endswith("\n\n")


def test_the_answers_reach_the_ci_files_unchanged(project: Path) -> None:
    answers = answers_of(project)
    ci = yaml.safe_load((project / ".github/workflows/ci.yml").read_text())["env"]
    gitlab = yaml.safe_load((project / ".gitlab-ci.yml").read_text())["variables"]
    for variables in (ci, gitlab):
        assert (variables["MODEL"], variables["TARGET"]) == (answers["name"], answers["target"])


def test_github_workflows_match_the_schema_offline(project: Path) -> None:
    workflows = sorted((project / ".github" / "workflows").glob("*.yml"))
    assert len(workflows) == 2
    checked = check_jsonschema("vendor.github-workflows", *workflows)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_gitlab_ci_matches_the_schema_offline(project: Path) -> None:
    checked = check_jsonschema("vendor.gitlab-ci", project / ".gitlab-ci.yml")
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_schema_check_rejects_a_broken_workflow(project: Path, tmp_path: Path) -> None:
    workflow = yaml.safe_load((project / ".github" / "workflows" / "ci.yml").read_text())
    workflow["jobs"]["test"]["step"] = workflow["jobs"]["test"].pop("steps")  # a typo GitHub rejects
    broken = tmp_path / "broken.yml"
    broken.write_text(yaml.safe_dump(workflow))
    checked = check_jsonschema("vendor.github-workflows", broken)
    assert checked.returncode == 1, checked.stdout + checked.stderr
    assert "network access" not in checked.stderr


def test_github_workflows_use_pinned_major_versions_of_actions(project: Path) -> None:
    used = set()
    for path in (project / ".github" / "workflows").glob("*.yml"):
        for job in yaml.safe_load(path.read_text())["jobs"].values():
            used |= {step["uses"] for step in job["steps"] if "uses" in step}
    assert used <= GITHUB_ACTIONS, used - GITHUB_ACTIONS
    assert {"actions/checkout@v4", "docker/build-push-action@v6"} <= used


def test_the_jobs_run_in_order_and_only_where_they_should(project: Path) -> None:
    ci = yaml.safe_load((project / ".github" / "workflows" / "ci.yml").read_text())
    assert ci["jobs"]["pipeline"]["needs"] == "test"
    assert ci["jobs"]["image"]["needs"] == "pipeline"
    assert "refs/heads/main" in ci["jobs"]["image"]["if"]
    monitor = yaml.safe_load((project / ".github" / "workflows" / "monitor.yml").read_text())
    assert set(monitor[True]) == {"schedule", "workflow_dispatch"}  # YAML 1.1 reads `on:` as True
    upload = next(s for s in monitor["jobs"]["monitor"]["steps"] if "upload-artifact" in s.get("uses", ""))
    assert upload["if"] == "always()"
    gitlab = yaml.safe_load((project / ".gitlab-ci.yml").read_text())
    assert gitlab["stages"] == ["test", "pipeline", "gate", "promote", "image", "monitor"]
    assert gitlab["default"]["image"] == "python:3.11-slim"
    for name, job in gitlab.items():
        if name.startswith(".") or not isinstance(job, dict) or "script" not in job:
            continue
        rules = job.get("rules") or next(
            gitlab[base]["rules"] for base in _bases(job) if "rules" in gitlab[base]
        )
        assert rules[0]["if"] == '$CI_PIPELINE_SOURCE == "schedule"', name
        assert rules[0].get("when") == (None if name == "monitor" else "never"), name


def _bases(job: dict[str, Any]) -> list[str]:
    extends = job.get("extends", [])
    return [extends] if isinstance(extends, str) else list(extends)


def test_pre_commit_runs_ruff_and_the_standard_hooks(project: Path) -> None:
    config = yaml.safe_load((project / ".pre-commit-config.yaml").read_text())
    hooks = {repo["repo"]: [hook["id"] for hook in repo["hooks"]] for repo in config["repos"]}
    assert hooks["https://github.com/astral-sh/ruff-pre-commit"] == ["ruff-check", "ruff-format"]
    assert set(hooks["https://github.com/pre-commit/pre-commit-hooks"]) == {
        "trailing-whitespace",
        "end-of-file-fixer",
        "check-yaml",
        "check-added-large-files",
    }
    assert all(repo["rev"].startswith("v") for repo in config["repos"])


# -- retrain.sh and the Dockerfile --------------------------------------------------------------------


def test_retrain_script_is_valid_bash(project: Path) -> None:
    script = project / "retrain.sh"
    checked = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr
    assert "set -euo pipefail" in script.read_text()


@pytest.mark.parametrize("relative", YAML_FILES[:3])
def test_the_shell_of_the_ci_files_is_valid_bash(project: Path, relative: str) -> None:
    scripts = shell_scripts(yaml.safe_load((project / relative).read_text()))
    assert scripts
    for script in scripts:
        checked = subprocess.run(["bash", "-n"], input=script, capture_output=True, text=True)
        assert checked.returncode == 0, f"{script}\n{checked.stderr}"


def test_retrain_script_quotes_the_target(project: Path) -> None:
    lines = (project / "retrain.sh").read_text().splitlines()
    assignment = next(line for line in lines if line.startswith("target="))
    echoed = subprocess.run(
        ["bash", "-c", f'{assignment}\nprintf %s "$target"'], capture_output=True, text=True, check=True
    )
    assert echoed.stdout == answers_of(project)["target"]


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    joined = text.replace("\\\n", " ")
    found = []
    for line in joined.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            keyword, _, arguments = line.strip().partition(" ")
            found.append((keyword.upper(), arguments.strip()))
    return found


def test_dockerfile_serves_the_production_model_as_a_non_root_user(project: Path) -> None:
    name = answers_of(project)["name"]
    instructions = dockerfile_instructions((project / "Dockerfile").read_text())
    keywords = [keyword for keyword, _ in instructions]
    arguments = dict(instructions[::-1])  # the first of each kind
    assert keywords[0] == "FROM" and arguments["FROM"] == "python:3.11-slim"
    assert any(k == "RUN" and "pip install" in a and "requirements.lock" in a for k, a in instructions)
    assert arguments["USER"] not in {"root", "0"}
    assert keywords.index("USER") < keywords.index("CMD")
    assert arguments["EXPOSE"] == "8080"
    assert "/health" in arguments["HEALTHCHECK"] and "8080" in arguments["HEALTHCHECK"]
    assert json.loads(arguments["CMD"]) == [
        "molen",
        "serve",
        f"{name}@production",
        "--host",
        "0.0.0.0",
        "--port",
        "8080",
    ]


def test_dockerignore_keeps_what_the_dockerfile_copies(project: Path) -> None:
    ignored = [
        line.rstrip("/")
        for line in (project / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    copied = []
    for keyword, arguments in dockerfile_instructions((project / "Dockerfile").read_text()):
        if keyword == "COPY":
            words = [word for word in arguments.split() if not word.startswith("--")]
            copied += [word.rstrip("/") for word in words[:-1]]
    assert copied
    for source in copied:
        assert not any(fnmatch(source, pattern) for pattern in ignored), source


# -- every molen command is a real one ----------------------------------------------------------------


#: Words that leave the next word in command position (``if molen gate …; then``).
SHELL_KEYWORDS = {"if", "then", "else", "elif", "do", "while", "until", "!", "time", "exec", "{"}


def _in_command_position(prefix: str) -> bool:
    """Whether a word after ``prefix`` (the text since the command began) is the command run."""
    words = prefix.split()
    if words[-2:] in (["python", "-m"], ["python3", "-m"]):
        return True
    return all(word in SHELL_KEYWORDS or re.match(r"[A-Za-z_]\w*=", word) for word in words)


def molen_commands(script: str) -> list[list[str]]:
    """The argument lists of the ``molen …`` commands a shell script runs (in ``$( )`` too;
    never words of other commands, quoted text or comments)."""
    text = script.replace("\\\n", " ")
    # one frame per nesting: its kind ("sh" for commands, also inside $( ); "'" or '"' for
    # quoted text), its open "(", where its current command began, where a molen command began
    frames: list[dict[str, Any]] = [{"kind": "sh", "depth": 0, "begun": 0, "molen": None}]
    found: list[list[str]] = []

    def finish(end: int) -> None:
        frame = frames[-1]
        if frame["molen"] is not None:
            found.append(shlex.split(text[frame["molen"] : end]))
        frame.update(begun=end + 1, molen=None)

    def push(kind: str, begun: int) -> None:
        frames.append({"kind": kind, "depth": 0, "begun": begun, "molen": None})

    index = 0
    while index < len(text):
        char, frame = text[index], frames[-1]
        if frame["kind"] == "'":
            if char == "'":
                frames.pop()
        elif frame["kind"] == '"':
            if char == "\\":
                index += 1
            elif char == '"':
                frames.pop()
            elif text.startswith("$(", index):
                push("sh", index + 2)
                index += 1
        elif char == "\\":
            index += 1
        elif char in "'\"":
            push(char, index)
        elif text.startswith("$(", index):
            push("sh", index + 2)
            index += 1
        elif char == "#" and (index == 0 or text[index - 1].isspace()):
            finish(index)
            index = text.find("\n", index) - 1 if "\n" in text[index:] else len(text)
        elif char == ")" and frame["depth"] == 0 and len(frames) > 1:
            finish(index)
            frames.pop()
        elif char in "\n;&|()`":
            finish(index)
            if char in "()":  # a subshell, or the end of a `case` pattern
                frame["depth"] = max(0, frame["depth"] + (1 if char == "(" else -1))
        elif (
            frame["molen"] is None
            and re.match(r"molen[ \t]", text[index : index + 6])
            and (index == 0 or text[index - 1] in " \t\n;&|(`")
            and _in_command_position(text[frame["begun"] : index])
        ):
            frame["molen"] = index
        index += 1
    while len(frames) > 1:  # an unclosed quote or $( : what was read still counts
        frames.pop()
    finish(len(text))
    return [argv for argv in map(_without_redirections, found) if len(argv) > 1]


def _without_redirections(argv: list[str]) -> list[str]:
    """``argv`` without its redirections (``> file``, ``2>/dev/null``, ``< in``)."""
    kept, words = [], iter(argv)
    for word in words:
        redirection = re.fullmatch(r"\d*(?:>>|>&|<&|&>|>|<)(.*)", word)
        if redirection is None:
            kept.append(word)
        elif not redirection.group(1):
            next(words, None)  # the file is the next word
    return kept


def shell_scripts(value: Any, key: str | None = None) -> list[str]:
    """The shell of a CI file: GitHub's ``run``, GitLab's ``script``/``before_script``/``after_script``."""
    if isinstance(value, dict):
        return [script for k, v in value.items() for script in shell_scripts(v, k)]
    if isinstance(value, list):
        return [script for item in value for script in shell_scripts(item, key)]
    if isinstance(value, str) and key in {"run", "script", "before_script", "after_script"}:
        return [value]
    return []


def commands_in(project: Path) -> dict[str, list[list[str]]]:
    """Every molen command line of the rendered CI/CD files, by file."""
    found = {}
    for relative in YAML_FILES:
        scripts = shell_scripts(yaml.safe_load((project / relative).read_text()))
        found[relative] = [argv for script in scripts for argv in molen_commands(script)]
    found["retrain.sh"] = molen_commands((project / "retrain.sh").read_text())
    docker = []
    for keyword, arguments in dockerfile_instructions((project / "Dockerfile").read_text()):
        if keyword in {"CMD", "ENTRYPOINT", "RUN"}:
            exec_form = arguments.startswith("[")
            docker += molen_commands(shlex.join(json.loads(arguments)) if exec_form else arguments)
    found["Dockerfile"] = docker
    return found


def problems_of(argv: list[str], root: Any) -> list[str]:
    """What is wrong with the molen command line ``argv`` (an unknown command, option or choice,
    a missing argument or required option); empty when molen would accept it. ``root`` is the
    click command of ``molen`` (Typer's vendored click: checked by attributes, not by class)."""
    command, path, problems, positional = root, ["molen"], [], []
    words = iter(argv[1:])
    for word in words:
        where = " ".join(path)
        if word.startswith("-") and word != "-":
            name, has_value, inline = word.partition("=")
            option = next(
                (
                    param
                    for param in command.params
                    if param.param_type_name == "option" and name in param.opts + param.secondary_opts
                ),
                None,
            )
            if option is None:
                if name not in command.context_settings.get("help_option_names", ["--help"]):
                    problems.append(f"{where}: no option {name}")
                continue
            if option.is_flag or option.count:
                continue
            value = inline if has_value else next(words, None)
            choices = getattr(option.type, "choices", None)
            if value is None:
                problems.append(f"{where} {name}: no value")
            elif choices is not None and not value.startswith("$") and value not in choices:
                problems.append(f"{where} {name} {value}: not one of {', '.join(map(str, choices))}")
        elif hasattr(command, "commands"):
            if word not in command.commands:
                problems.append(f"{where}: no command {word!r}")
                return problems
            command = command.commands[word]
            path.append(word)
        else:
            positional.append(word)
    where = " ".join(path)
    if hasattr(command, "commands"):
        return [*problems, f"{where}: a group, not a command"]
    arguments = [param for param in command.params if param.param_type_name == "argument"]
    least = sum(1 for param in arguments if param.required)
    most = float("inf") if any(param.nargs == -1 for param in arguments) else sum(p.nargs for p in arguments)
    if not least <= len(positional) <= most:
        problems.append(f"{where}: {len(positional)} arguments, expected {least} to {most}")
    given = {word.partition("=")[0] for word in argv}
    for param in command.params:
        if param.param_type_name == "option" and param.required and not given & set(param.opts):
            problems.append(f"{where}: {max(param.opts, key=len)} is required")
    return problems


@pytest.fixture(scope="module")
def cli() -> Any:
    return typer.main.get_command(build([]))


def test_every_molen_command_is_real(project: Path, cli: Any) -> None:
    found = commands_in(project)
    problems = [
        f"{file}: {problem}"
        for file, lines in found.items()
        for a in lines
        for problem in problems_of(a, cli)
    ]
    assert not problems, "\n".join(problems)
    used = {
        " ".join(argv[1:3]) if argv[1] in {"data", "models", "build"} else argv[1]
        for lines in found.values()
        for argv in lines
    }
    assert used >= {
        "data pull",
        "repro",
        "gate",
        "models show",
        "models promote",
        "build docker",
        "monitor",
        "serve",
    }
    assert found["retrain.sh"] and found["Dockerfile"] and found[".gitlab-ci.yml"]


def test_the_gate_and_promotion_compare_the_metric_of_the_task(project: Path) -> None:
    metric = "auc" if answers_of(project)["name"] == ANSWERS["classification"]["name"] else "rmse"
    retrain = (project / "retrain.sh").read_text()
    assert f"metric={metric}" in retrain
    assert yaml.safe_load((project / ".github/workflows/ci.yml").read_text())["env"]["METRIC"] == metric
    assert yaml.safe_load((project / ".gitlab-ci.yml").read_text())["variables"]["METRIC"] == metric
    gating = [
        argv
        for lines in commands_in(project).values()
        for argv in lines
        if argv[1] == "gate" or argv[1:3] == ["models", "promote"]
    ]
    assert gating and all("--metric" in argv and "--data" in argv and "--target" in argv for argv in gating)


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        ("molen repro", [["molen", "repro"]]),
        (
            "molen models show m -f json > out.json 2>/dev/null",
            [["molen", "models", "show", "m", "-f", "json"]],
        ),
        ("useradd --gid molen --home-dir /app molen", []),
        (
            'v="$(molen models show "$M@latest" -f json | python -c \'x\')"',
            [["molen", "models", "show", "$M@latest", "-f", "json"]],
        ),
        ("status=0\nmolen gate m \\\n  --data d || status=$?", [["molen", "gate", "m", "--data", "d"]]),
        ("# molen is not run here\necho 'molen repro' \"molen gate\"", []),
        (
            'python -m molen data pull; molen monitor m --on-alert "bash retrain.sh"',
            [
                ["molen", "data", "pull"],
                ["molen", "monitor", "m", "--on-alert", "bash retrain.sh"],
            ],
        ),
        ('case "$s" in 1) molen repro ;; esac', [["molen", "repro"]]),
    ],
)
def test_molen_commands_are_found_in_shell(script: str, expected: list[list[str]]) -> None:
    assert molen_commands(script) == expected


def test_a_wrong_molen_command_is_reported(cli: Any) -> None:
    assert problems_of(["molen", "pull"], cli) == ["molen: no command 'pull'"]
    assert "molen gate: no option --candidat" in problems_of(
        ["molen", "gate", "m", "--candidat", "latest"], cli
    )
    assert problems_of(["molen", "monitor", "m@production", "-f", "pdf"], cli)
    assert problems_of(["molen", "build", "docker", "m@production"], cli) == [
        "molen build docker: --output is required"
    ]
    assert problems_of(["molen", "models", "promote", "m"], cli) == [
        "molen models promote: 1 arguments, expected 2 to 2"
    ]
    assert (
        problems_of(
            ["molen", "-C", "here", "models", "promote", "m", "3", "--to", "production", "--gate"], cli
        )
        == []
    )
