"""``molen init NAME --template …``: a ready project from a template, and ``molen template
update`` to bring an older project up to date with molen's template.

Templates live in ``molen/templates/``: ``common/`` holds what every project gets, and
``TEMPLATE/`` (when it exists) adds or replaces files. Files ending ``.jinja`` are rendered with
Jinja2 (strict: an unknown variable is an error) and lose the suffix; the rest are copied. The
variables are the project's answers: ``name``, ``template``, ``task``, ``target``, ``dataset``,
``dataset_title``, ``python_version``, ``molen_version``.

A new project gets the rendered files, its data (a data set shipped with scikit-learn, written
as ``data/raw.csv`` and versioned with ``molen data add``), ``requirements.lock`` pinned to this
environment (:mod:`molen.envlock`), a ``git init`` with a first commit, and
``.molen-template.json``: the template, its version, the answers and the hash of every rendered
file. ``update`` renders the current template with the same answers and, file by file: adds
what is new; replaces a file the user has not edited (its hash is still the recorded one);
leaves a file alone when it already has the template's new content; and when both the user and
the template changed a file, writes the template's version beside it as ``FILE.template-new``.
"""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from molen.errors import ConflictError, InvalidValueError, NotFoundError

__all__ = ["TEMPLATES", "Template", "UpdateResult", "create_project", "render", "update_project"]

TEMPLATES_ROOT = Path(__file__).resolve().parent / "templates"
MANIFEST_NAME = ".molen-template.json"
#: Bumped when the templates change in a way ``molen template update`` should bring to projects.
TEMPLATE_VERSION = 1
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,62}")


class Template(NamedTuple):
    """A project template and the data set it starts with."""

    name: str
    task: str
    target: str
    dataset: str
    dataset_title: str
    description: str


TEMPLATES = {
    "classification": Template(
        "classification",
        "classification",
        "malignant",
        "breast_cancer",
        "the Wisconsin breast cancer data set (569 tumours, 30 measurements, malignant or not)",
        "a classifier (logistic regression) on scikit-learn's breast cancer data",
    ),
    "regression": Template(
        "regression",
        "regression",
        "progression",
        "diabetes",
        "the diabetes data set (442 patients, 10 measurements, disease progression after a year)",
        "a regressor (ridge regression) on scikit-learn's diabetes data",
    ),
}


def _answers(name: str, template: Template) -> dict[str, Any]:
    from molen._version import __version__

    return {
        "name": name,
        "template": template.name,
        "task": template.task,
        "target": template.target,
        "dataset": template.dataset,
        "dataset_title": template.dataset_title,
        "python_version": ".".join(platform.python_version_tuple()[:2]),
        "molen_version": __version__,
    }


def render(answers: dict[str, Any], *, root: Path = TEMPLATES_ROOT) -> dict[str, bytes]:
    """Every file of the template ``answers["template"]`` rendered: relative path -> bytes."""
    import jinja2

    environment = jinja2.Environment(
        keep_trailing_newline=True, undefined=jinja2.StrictUndefined, autoescape=False
    )
    files: dict[str, bytes] = {}
    for layer in (root / "common", root / str(answers["template"])):
        if not layer.is_dir():
            continue
        for path in sorted(layer.rglob("*")):
            if not path.is_file() or "__pycache__" in path.parts:
                continue
            relative = path.relative_to(layer).as_posix()
            if relative.endswith(".jinja"):
                text = environment.from_string(path.read_text()).render(**answers)
                files[relative.removesuffix(".jinja")] = text.encode()
            else:
                files[relative] = path.read_bytes()
    return files


def _write(root: Path, relative: str, data: bytes) -> None:
    from molen.atomic import write_atomic

    target = root / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(target, data)
    if relative.endswith(".sh"):
        target.chmod(0o755)


def _dataset(template: Template) -> Any:
    """The template's data set as one frame, the target named as the template says."""
    from sklearn import datasets

    if template.dataset == "breast_cancer":
        frame = datasets.load_breast_cancer(as_frame=True).frame
        return frame.assign(**{template.target: 1 - frame.pop("target")})  # sklearn: 0 = malignant
    if template.dataset == "diabetes":
        frame = datasets.load_diabetes(as_frame=True, scaled=False).frame
        return frame.rename(columns={"target": template.target})
    raise InvalidValueError(f"unknown data set {template.dataset!r}")


def _digest(data: bytes) -> str:
    from molen.hashing import hash_bytes

    return hash_bytes(data)


def _git(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": os.environ.get("GIT_AUTHOR_NAME", "molen"),
        "GIT_AUTHOR_EMAIL": os.environ.get("GIT_AUTHOR_EMAIL", "molen@localhost"),
        "GIT_COMMITTER_NAME": os.environ.get("GIT_COMMITTER_NAME", "molen"),
        "GIT_COMMITTER_EMAIL": os.environ.get("GIT_COMMITTER_EMAIL", "molen@localhost"),
    }
    return subprocess.run(["git", *args], cwd=root, env=env, capture_output=True, text=True, check=False)


def create_project(
    path: Path | str,
    template: str = "classification",
    *,
    git: bool = True,
    echo: Callable[[str], None] = lambda _line: None,
) -> Path:
    """A ready project at ``path`` (its folder name is the project's and the model's name);
    returns its root. ``echo`` hears each step."""
    from molen.envlock import IN_NAME, LOCK_NAME, lock_text
    from molen.project import CONFIG_NAME, STATE_DIR

    if template not in TEMPLATES:
        raise InvalidValueError(
            f"--template {template!r}: use one of {', '.join(TEMPLATES)} (molen init --list)"
        )
    root = Path(path).resolve()
    name = root.name
    if not _NAME.fullmatch(name):
        raise InvalidValueError(
            f"project name {name!r}: use a letter, then letters, digits, '-' or '_' (it names the model too)"
        )
    if (root / CONFIG_NAME).exists():
        raise ConflictError(f"{root} is already a molen project ({CONFIG_NAME} exists)")
    answers = _answers(name, TEMPLATES[template])
    files = render(answers)
    clashes = sorted(relative for relative in files if (root / relative).exists())
    if clashes:
        raise ConflictError(f"{root} already has {clashes[0]}; make the project in a new folder")
    echo(f"rendering the {template} template into {root}")
    root.mkdir(parents=True, exist_ok=True)
    state = root / STATE_DIR
    state.mkdir(exist_ok=True)
    (state / ".gitignore").write_text("# local molen state: never committed\n*\n")
    for relative, data in files.items():
        _write(root, relative, data)
    echo(f"pinning the environment in {LOCK_NAME}")
    lock = lock_text((root / IN_NAME).read_text().splitlines()).encode()
    _write(root, LOCK_NAME, lock)
    manifest = {
        "template": template,
        "template_version": TEMPLATE_VERSION,
        "answers": answers,
        "files": {relative: _digest(data) for relative, data in sorted(files.items())},
    }
    _write(root, MANIFEST_NAME, (json.dumps(manifest, indent=2) + "\n").encode())
    echo(f"writing {TEMPLATES[template].dataset_title} to data/raw.csv and versioning it")
    (root / "data").mkdir(exist_ok=True)
    _dataset(TEMPLATES[template]).to_csv(root / "data" / "raw.csv", index=False)
    _track(root, "data/raw.csv")
    if git:
        echo("git init and a first commit")
        if _git(root, "init", "-q").returncode == 0:
            _git(root, "add", "-A")
            done = _git(root, "commit", "-qm", f"A molen project from the {template} template")
            if done.returncode != 0:
                echo(f"git commit failed: {done.stderr.strip()}")
        else:
            echo("git is not available: no repository made")
    return root


def _track(root: Path, relative: str) -> None:
    from molen.data.tracked import open_data_session
    from molen.workspace import open_workspace

    session = open_data_session(open_workspace(root))
    here = Path.cwd()
    os.chdir(root)
    try:
        session.add([relative])
    finally:
        os.chdir(here)


class UpdateResult(NamedTuple):
    """What ``update_project`` did, by file."""

    added: list[str]
    updated: list[str]
    conflicts: list[str]  # FILE.template-new written beside the user's FILE
    unchanged: int
    old_version: int
    new_version: int


def update_project(root: Path | str, *, templates_root: Path = TEMPLATES_ROOT) -> UpdateResult:
    """Bring the project at ``root`` up to date with the current template (see the module
    docstring); ``.molen-template.json`` records the new state."""
    from molen._version import __version__

    root = Path(root).resolve()
    path = root / MANIFEST_NAME
    if not path.is_file():
        raise NotFoundError(
            f"{root} has no {MANIFEST_NAME}: it was not made by `molen init --template`, "
            "so there is nothing to update"
        )
    manifest = json.loads(path.read_text())
    old_version = int(manifest.get("template_version", 0))
    answers = {**manifest["answers"], "molen_version": __version__}
    recorded: dict[str, str] = manifest.get("files", {})
    files = render(answers, root=templates_root)
    added, updated, conflicts, unchanged = [], [], [], 0
    new_hashes = dict(recorded)
    for relative, data in files.items():
        target = root / relative
        new = _digest(data)
        if not target.exists():
            if relative in recorded:  # the user deleted it: respect that
                unchanged += 1
                continue
            _write(root, relative, data)
            added.append(relative)
            new_hashes[relative] = new
            continue
        current = _digest(target.read_bytes())
        if current == new:
            unchanged += 1
            new_hashes[relative] = new
        elif recorded.get(relative) == current:  # not edited here: take the template's
            _write(root, relative, data)
            updated.append(relative)
            new_hashes[relative] = new
        else:
            _write(root, f"{relative}.template-new", data)
            conflicts.append(relative)
    manifest.update(
        template_version=TEMPLATE_VERSION, answers=answers, files=dict(sorted(new_hashes.items()))
    )
    _write(root, MANIFEST_NAME, (json.dumps(manifest, indent=2) + "\n").encode())
    return UpdateResult(added, updated, conflicts, unchanged, old_version, TEMPLATE_VERSION)
