"""molen init --template: a generated project passes its own tests and `molen repro` out of the
box; its data is versioned, its environment locked, its template updatable."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from molen.envlock import read_lock
from molen.scaffold import MANIFEST_NAME, TEMPLATES_ROOT, update_project


def molen_cli(cwd: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "molen", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, "MOLEN_MODELS_IMPORTANCE": "false", **(env or {})},
        timeout=300,
    )


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout


@pytest.mark.parametrize(("template", "metric"), [("classification", "roc_auc"), ("regression", "r2")])
def test_a_new_project_passes_its_tests_and_reproduces(tmp_path: Path, template: str, metric: str) -> None:
    made = molen_cli(tmp_path, "init", "clinic", "--template", template)
    assert made.returncode == 0, made.stdout + made.stderr
    root = tmp_path / "clinic"
    for relative in (
        "molen.yaml",
        "params.yaml",
        "requirements.in",
        "requirements.lock",
        "src/prepare.py",
        "src/train.py",
        "src/evaluate.py",
        "tests/test_features.py",
        "README.md",
        ".gitignore",
        "data/raw.csv.molen",
        MANIFEST_NAME,
    ):
        assert (root / relative).is_file(), relative
    # one commit holding the pointer, never the data's bytes
    assert git(root, "log", "--oneline").count("\n") == 1
    committed = git(root, "ls-files").split()
    assert "data/raw.csv.molen" in committed and "data/raw.csv" not in committed
    assert not git(root, "status", "--porcelain")

    tests = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "tests"], cwd=root, capture_output=True, text=True
    )
    assert tests.returncode == 0, tests.stdout + tests.stderr

    done = molen_cli(root, "repro")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "registered clinic/1" in done.stdout and "warning" not in done.stderr
    scores = json.loads((root / "metrics.json").read_text())
    assert scores[metric] > (0.9 if template == "classification" else 0.3)
    (run,) = json.loads(molen_cli(root, "runs", "list", "-f", "json").stdout)
    assert run["tags"]["molen.env.lock"].startswith("requirements.lock ")
    assert run["params"]["prepare.test_size"] == "0.25" and run["metrics"][metric] == pytest.approx(
        scores[metric]
    )
    again = molen_cli(root, "repro")
    assert again.returncode == 0 and again.stdout.count("up-to-date") == 3, again.stdout
    shown = json.loads(molen_cli(root, "models", "show", "clinic/1", "-f", "json").stdout)
    assert shown["manifest"]["task"] == template
    if template == "classification":  # a rebuild reproduces, and registers no second version
        verified = molen_cli(root, "repro", "--verify", run["id"])
        assert verified.returncode == 0 and "reproduces" in verified.stdout, verified.stdout + verified.stderr
        versions = json.loads(molen_cli(root, "models", "show", "clinic", "-f", "json").stdout)["versions"]
        assert [v["version"] for v in versions] == [1]


def test_the_lock_pins_this_environment_and_repro_warns_when_it_moves(tmp_path: Path) -> None:
    assert molen_cli(tmp_path, "init", "lab", "--no-git").returncode == 0
    root = tmp_path / "lab"
    assert not (root / ".git").exists()
    pinned = read_lock(root / "requirements.lock")
    for name in ("scikit-learn", "pandas", "numpy", "molen", "pyarrow"):
        assert pinned[name] == metadata.version(name), name
    lock = root / "requirements.lock"
    lock.write_text(lock.read_text().replace(f"pandas=={pinned['pandas']}", "pandas==0.1.0"))
    dry = molen_cli(root, "repro", "--dry")
    assert "warning: this environment differs" in dry.stderr
    assert f"pandas: locked 0.1.0, installed {pinned['pandas']}" in dry.stderr
    relocked = molen_cli(root, "template", "lock")
    assert relocked.returncode == 0 and "packages pinned" in relocked.stdout
    assert read_lock(lock)["pandas"] == pinned["pandas"]
    assert "warning" not in molen_cli(root, "repro", "--dry").stderr


def test_init_lists_refuses_and_keeps_existing_folders_blank(tmp_path: Path) -> None:
    listed = molen_cli(tmp_path, "init", "--list")
    assert listed.returncode == 0
    assert all(name in listed.stdout for name in ("classification", "regression", "blank"))
    bad = molen_cli(tmp_path, "init", "9lives")
    assert bad.returncode == 2 and "project name '9lives'" in bad.stderr
    unknown = molen_cli(tmp_path, "init", "x", "--template", "vision")
    assert unknown.returncode == 2 and "--template 'vision'" in unknown.stderr
    code = tmp_path / "existing"
    code.mkdir()
    (code / "train.py").write_text("print('mine')\n")
    blank = molen_cli(code, "init")
    assert blank.returncode == 0 and (code / "molen.yaml").is_file()
    assert sorted(p.name for p in code.iterdir()) == [".molen", "molen.yaml", "train.py"]
    clash = tmp_path / "clash"
    clash.mkdir()
    (clash / "params.yaml").write_text("mine: 1\n")
    refused = molen_cli(tmp_path, "init", "clash", "--template", "regression")
    assert refused.returncode == 4 and "already has params.yaml" in refused.stderr
    assert (clash / "params.yaml").read_text() == "mine: 1\n"


def test_template_update_takes_new_files_and_keeps_the_users_edits(tmp_path: Path) -> None:
    assert molen_cli(tmp_path, "init", "shop", "--no-git").returncode == 0
    root = tmp_path / "shop"
    newer = tmp_path / "templates"
    shutil.copytree(TEMPLATES_ROOT, newer)
    (newer / "common" / "CONTRIBUTING.md").write_text("# How we work\n")
    (newer / "common" / ".gitignore").write_text((root / ".gitignore").read_text() + "*.tmp\n")
    readme = newer / "common" / "README.md.jinja"
    readme.write_text(readme.read_text() + "\nA new section from the template.\n")
    mine = (root / "README.md").read_text() + "\nOur own notes.\n"
    (root / "README.md").write_text(mine)

    result = update_project(root, templates_root=newer)
    assert result.added == ["CONTRIBUTING.md"] and result.updated == [".gitignore"]
    assert result.conflicts == ["README.md"]
    assert (root / "CONTRIBUTING.md").read_text() == "# How we work\n"
    assert (root / ".gitignore").read_text().endswith("*.tmp\n")
    assert (root / "README.md").read_text() == mine  # never overwritten
    assert "A new section from the template." in (root / "README.md.template-new").read_text()
    recorded = json.loads((root / MANIFEST_NAME).read_text())
    assert "CONTRIBUTING.md" in recorded["files"]
    again = update_project(root, templates_root=newer)
    assert not again.added and not again.updated and again.conflicts == ["README.md"]

    cli = molen_cli(root, "template", "update")  # the installed template: README.md still differs
    assert cli.returncode == 1 and "README.md" in cli.stdout and "to merge" in cli.stdout
    outside = molen_cli(tmp_path, "template", "update")
    assert outside.returncode != 0
