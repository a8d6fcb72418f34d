"""Projects (molen.yaml, .molen/) and settings: flag > environment > molen.yaml > default."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from molen.config import SETTINGS, Settings, env_name, load_settings
from molen.errors import (
    ConflictError,
    InvalidValueError,
    NotFoundError,
    ProjectNotFoundError,
    UsageError,
)
from molen.project import CONFIG_NAME, STATE_DIR, Project, find_project, init_project

MOLEN = Path(sys.executable).parent / "molen"


def write_config(project: Project, text: str) -> None:
    project.config_path.write_text(text)


@pytest.fixture
def project(tmp_path: Path) -> Project:
    return init_project(tmp_path / "churn")


@pytest.fixture
def nested(project: Project) -> Path:
    folder = project.root / "src" / "deep" / "er"
    folder.mkdir(parents=True)
    return folder


# --------------------------------------------------------------------------- projects


def test_init_project_creates_config_and_state(tmp_path: Path) -> None:
    project = init_project(tmp_path / "new" / "churn")
    root = (tmp_path / "new" / "churn").resolve()
    assert project == Project(root)
    assert project.config_path == root / CONFIG_NAME
    assert project.state_dir == root / STATE_DIR
    assert project.config_path.is_file()
    assert project.state_dir.is_dir()
    gitignore = project.state_dir / ".gitignore"
    assert "*" in gitignore.read_text().splitlines()
    data = yaml.safe_load(project.config_path.read_text())
    assert data["tracking"]["experiment"] == "churn"
    assert sorted(os.listdir(root)) == [STATE_DIR, CONFIG_NAME]  # no temporary file left


def test_init_project_in_an_existing_folder_with_str_path(tmp_path: Path) -> None:
    (tmp_path / "data.csv").write_text("a,b\n")
    project = init_project(str(tmp_path), experiment="baseline")
    assert project.root == tmp_path.resolve()
    assert (tmp_path / "data.csv").read_text() == "a,b\n"
    assert load_settings(tmp_path)["tracking.experiment"] == "baseline"


@pytest.mark.parametrize("name", ['a: "b" #c', "é ü 漢字", "yes", "123", "- x", "{x}"])
def test_init_project_experiment_names_survive_yaml(tmp_path: Path, name: str) -> None:
    init_project(tmp_path, experiment=name)
    settings = load_settings(tmp_path)
    assert settings["tracking.experiment"] == name
    assert settings.source("tracking.experiment") == CONFIG_NAME


def test_init_project_refuses_a_second_init(project: Project) -> None:
    write_config(project, "tracking:\n  experiment: mine\n")
    with pytest.raises(ConflictError, match="already a molen project"):
        init_project(project.root)
    with pytest.raises(ConflictError):
        init_project(project.root, experiment="other")
    assert project.config_path.read_text() == "tracking:\n  experiment: mine\n"


def test_find_project_from_a_nested_subfolder(project: Project, nested: Path) -> None:
    assert find_project(nested) == project
    assert find_project(str(nested)) == project
    assert find_project(project.root) == project


def test_find_project_defaults_to_cwd(
    project: Project, nested: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(nested)
    assert find_project() == project


def test_find_project_picks_the_innermost(project: Project) -> None:
    inner = init_project(project.root / "sub")
    (inner.root / "x").mkdir()
    assert find_project(inner.root / "x") == inner
    assert find_project(project.root / STATE_DIR) == project


def test_folder_named_molen_yaml_is_not_a_project(tmp_path: Path) -> None:
    (tmp_path / CONFIG_NAME).mkdir()
    with pytest.raises(ProjectNotFoundError):
        find_project(tmp_path)


def test_no_project_error_mentions_molen_init(tmp_path: Path) -> None:
    with pytest.raises(ProjectNotFoundError) as info:
        find_project(tmp_path)
    assert "`molen init`" in str(info.value)
    assert str(tmp_path.resolve()) in str(info.value)
    assert isinstance(info.value, NotFoundError)
    assert info.value.exit_code == 3


def test_load_settings_without_project_raises(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ProjectNotFoundError, match="molen init"):
        load_settings(tmp_path)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ProjectNotFoundError):
        load_settings()


# --------------------------------------------------------------------------- precedence


def test_defaults_in_a_project(project: Project) -> None:
    write_config(project, "")
    settings = load_settings(project.root)
    assert settings.project == project
    assert settings["tracking.uri"] == f"sqlite:///{project.state_dir / 'molen.db'}"
    assert settings["objects.url"] == str(project.state_dir / "cache")
    assert settings["tracking.experiment"] == "Default"
    assert settings["tracking.flush_interval"] == 2.0
    assert settings["tracking.heartbeat_interval"] == 30.0
    assert settings["tracking.capture_packages"] is True
    assert settings["objects.s3_endpoint_url"] is None
    assert settings["objects.verify"] is True
    assert all(settings.source(key) == "default" for key in settings)


def test_settings_is_a_mapping_in_declaration_order(project: Project) -> None:
    settings = load_settings(project.root)
    keys = [s.key for s in SETTINGS]
    assert list(settings) == keys
    assert len(settings) == len(SETTINGS)
    assert [row[0] for row in settings.rows()] == keys
    assert dict(settings)["objects.verify"] is True
    with pytest.raises(KeyError):
        settings["no.such.key"]


@pytest.mark.parametrize(
    ("layers", "value", "source"),
    [
        ((), "churn", CONFIG_NAME),  # init wrote the folder name
        (("env",), "from-env", "env MOLEN_TRACKING_EXPERIMENT"),
        (("flag",), "from-flag", "flag"),
        (("env", "flag"), "from-flag", "flag"),
    ],
)
def test_precedence_flag_env_file(
    project: Project, monkeypatch: pytest.MonkeyPatch, layers: tuple[str, ...], value: str, source: str
) -> None:
    flags: dict[str, Any] = {}
    if "env" in layers:
        monkeypatch.setenv("MOLEN_TRACKING_EXPERIMENT", "from-env")
    if "flag" in layers:
        flags["tracking.experiment"] = "from-flag"
    settings = load_settings(project.root, flags=flags)
    assert settings["tracking.experiment"] == value
    assert settings.source("tracking.experiment") == source


def test_each_layer_for_different_keys_at_once(project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    write_config(
        project, "tracking:\n  flush_interval: 7\n  experiment: file-exp\nobjects:\n  verify: false\n"
    )
    monkeypatch.setenv("MOLEN_TRACKING_FLUSH_INTERVAL", "0.5")
    monkeypatch.setenv("MOLEN_TRACKING_URI", "sqlite:////env/molen.db")
    settings = load_settings(
        project.root, flags={"tracking.uri": "postgresql+psycopg://u@h/db", "objects.url": None}
    )
    assert settings["tracking.uri"] == "postgresql+psycopg://u@h/db"
    assert settings.source("tracking.uri") == "flag"
    assert settings["tracking.flush_interval"] == 0.5
    assert settings.source("tracking.flush_interval") == "env MOLEN_TRACKING_FLUSH_INTERVAL"
    assert settings["tracking.experiment"] == "file-exp"
    assert settings.source("tracking.experiment") == "molen.yaml"
    assert settings["objects.verify"] is False
    assert settings.source("objects.verify") == "molen.yaml"
    # a None flag means "not given": the next layer decides
    assert settings["objects.url"] == str(project.state_dir / "cache")
    assert settings.source("objects.url") == "default"
    assert settings.source("tracking.heartbeat_interval") == "default"


def test_env_names() -> None:
    assert env_name("tracking.uri") == "MOLEN_TRACKING_URI"
    assert env_name("objects.s3_endpoint_url") == "MOLEN_OBJECTS_S3_ENDPOINT_URL"
    assert [s.env for s in SETTINGS] == [env_name(s.key) for s in SETTINGS]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1", True),
        ("true", True),
        ("YES", True),
        (" on ", True),
        ("0", False),
        ("False", False),
        ("no", False),
    ],
)
def test_boolean_spellings(
    project: Project, monkeypatch: pytest.MonkeyPatch, text: str, expected: bool
) -> None:
    monkeypatch.setenv("MOLEN_OBJECTS_VERIFY", text)
    assert load_settings(project.root)["objects.verify"] is expected


def test_yaml_types_are_parsed(project: Project) -> None:
    write_config(
        project,
        "tracking:\n  flush_interval: 3\n  heartbeat_interval: 0.25\n  capture_packages: no\n"
        "  experiment: 42\nobjects:\n  verify: yes\n",
    )
    settings = load_settings(project.root)
    assert settings["tracking.flush_interval"] == 3.0
    assert settings["tracking.heartbeat_interval"] == 0.25
    assert settings["tracking.capture_packages"] is False
    assert settings["tracking.experiment"] == "42"
    assert settings["objects.verify"] is True


# --------------------------------------------------------------------------- paths


def test_relative_paths_in_molen_yaml_resolve_against_the_root(
    project: Project, nested: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_config(project, "tracking:\n  uri: sqlite:///x.db\nobjects:\n  url: store\n")
    monkeypatch.chdir(nested)
    settings = load_settings()
    assert settings.project == project
    assert settings["objects.url"] == str(project.root / "store")
    assert settings["tracking.uri"] == f"sqlite:///{project.root / 'x.db'}"
    assert settings["tracking.uri"].startswith("sqlite:////")


def test_relative_subfolder_paths_in_molen_yaml(
    project: Project, nested: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_config(project, "tracking:\n  uri: sqlite:///state/db/m.db\nobjects:\n  url: ./shared/cache\n")
    monkeypatch.chdir(nested)
    settings = load_settings()
    assert Path(settings["objects.url"]).resolve() == project.root / "shared" / "cache"
    assert settings["tracking.uri"] == f"sqlite:///{project.root / 'state/db/m.db'}"


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("objects.url", "/abs/store"),
        ("objects.url", "s3://bucket/prefix"),
        ("objects.url", "file:///abs/store"),
        ("tracking.uri", "sqlite:////abs/m.db"),
        ("tracking.uri", "sqlite:///:memory:"),
        ("tracking.uri", "postgresql+psycopg://user@host/db"),
    ],
)
def test_absolute_and_remote_urls_are_kept(project: Project, key: str, value: str) -> None:
    section, name = key.split(".")
    write_config(project, yaml.safe_dump({section: {name: value}}))
    assert load_settings(project.root)[key] == value


def test_home_relative_objects_url_is_not_put_under_the_root(
    project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    write_config(project, "objects:\n  url: ~/molen-cache\n")
    value = load_settings(project.root)["objects.url"]
    assert "/~/" not in value
    assert Path(value).expanduser() == tmp_path / "home" / "molen-cache"


# --------------------------------------------------------------------------- bad values


@pytest.mark.parametrize(
    ("variable", "text"),
    [
        ("MOLEN_TRACKING_FLUSH_INTERVAL", "abc"),
        ("MOLEN_TRACKING_FLUSH_INTERVAL", "-1"),
        ("MOLEN_TRACKING_FLUSH_INTERVAL", "0"),
        ("MOLEN_TRACKING_FLUSH_INTERVAL", "nan"),
        ("MOLEN_TRACKING_HEARTBEAT_INTERVAL", "-0.5"),
        ("MOLEN_OBJECTS_VERIFY", "maybe"),
        ("MOLEN_TRACKING_CAPTURE_PACKAGES", "2"),
    ],
)
def test_bad_env_values(project: Project, monkeypatch: pytest.MonkeyPatch, variable: str, text: str) -> None:
    monkeypatch.setenv(variable, text)
    with pytest.raises(InvalidValueError) as info:
        load_settings(project.root)
    key = next(s.key for s in SETTINGS if s.env == variable)
    message = str(info.value)
    assert key in message
    assert variable in message  # where the value came from
    assert repr(text) in message or text == ""
    assert "\n" not in message


def test_bad_value_in_molen_yaml_names_the_file(project: Project) -> None:
    write_config(project, "tracking:\n  flush_interval: soon\n")
    with pytest.raises(InvalidValueError, match=r"tracking\.flush_interval from molen\.yaml"):
        load_settings(project.root)


def test_bad_flag_value_names_the_flag(project: Project) -> None:
    with pytest.raises(InvalidValueError, match=r"objects\.verify from a flag"):
        load_settings(project.root, flags={"objects.verify": "perhaps"})


def test_bad_env_value_wins_over_good_file_value(project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    write_config(project, "tracking:\n  flush_interval: 3\n")
    monkeypatch.setenv("MOLEN_TRACKING_FLUSH_INTERVAL", "abc")
    with pytest.raises(InvalidValueError, match="MOLEN_TRACKING_FLUSH_INTERVAL"):
        load_settings(project.root)


def test_invalid_yaml_names_file_and_line(project: Project) -> None:
    write_config(project, "tracking:\n  experiment: x\n\tbad: 1\n")
    with pytest.raises(UsageError) as info:
        load_settings(project.root)
    assert f"{project.config_path}:3" in str(info.value)
    assert not isinstance(info.value, InvalidValueError)


def test_yaml_that_is_not_a_mapping(project: Project) -> None:
    write_config(project, "- tracking\n- objects\n")
    with pytest.raises(UsageError, match="must be a mapping"):
        load_settings(project.root)


def test_unknown_flag_key(project: Project) -> None:
    with pytest.raises(UsageError, match=r"'tracking\.url'"):
        load_settings(project.root, flags={"tracking.url": "sqlite:///x.db"})


def test_unknown_flag_key_that_is_none_is_ignored(project: Project) -> None:
    assert isinstance(load_settings(project.root, flags={"nonsense": None}), Settings)


# --------------------------------------------------------------------------- without a project


def test_env_tracking_uri_allows_running_without_project(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MOLEN_TRACKING_URI", "postgresql+psycopg://u@h/db")
    monkeypatch.chdir(tmp_path)
    settings = load_settings(require_project=True)
    assert settings.project is None
    assert settings["tracking.uri"] == "postgresql+psycopg://u@h/db"
    assert settings.source("tracking.uri") == "env MOLEN_TRACKING_URI"
    assert settings["objects.url"] is None  # no project, no default folder
    assert settings["tracking.experiment"] == "Default"


def test_no_project_not_required(tmp_path: Path) -> None:
    settings = load_settings(tmp_path, require_project=False)
    assert settings.project is None
    assert settings["tracking.uri"] is None
    assert settings.source("tracking.uri") == "default"


def test_a_tracking_uri_flag_stands_in_for_a_project(tmp_path: Path) -> None:
    """`molen --tracking-uri URL tokens create …` on a server's machine needs no project."""
    settings = load_settings(tmp_path, flags={"tracking.uri": "sqlite:////srv/molen.db"})
    assert settings.project is None and settings["tracking.uri"] == "sqlite:////srv/molen.db"
    with pytest.raises(ProjectNotFoundError):
        load_settings(tmp_path, flags={"tracking.uri": None})


def test_empty_env_tracking_uri_does_not_replace_a_project(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MOLEN_TRACKING_URI", "")
    with pytest.raises(ProjectNotFoundError):
        load_settings(tmp_path)


# --------------------------------------------------------------------------- CLI


def molen(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("MOLEN_")}
    environment.update(env, COLUMNS="250", NO_COLOR="1", TERM="dumb")
    return subprocess.run(
        [str(MOLEN), *args], cwd=cwd, env=environment, capture_output=True, text=True, timeout=60
    )


def test_cli_config_show_json_sources(project: Project, nested: Path) -> None:
    write_config(project, "tracking:\n  experiment: from-file\nobjects:\n  url: store\n")
    result = molen("config", "show", "--format", "json", cwd=nested, MOLEN_TRACKING_FLUSH_INTERVAL="5")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert list(data) == [s.key for s in SETTINGS]
    assert data["tracking.flush_interval"] == {"value": 5.0, "source": "env MOLEN_TRACKING_FLUSH_INTERVAL"}
    assert data["tracking.experiment"] == {"value": "from-file", "source": "molen.yaml"}
    assert data["objects.url"] == {"value": str(project.root / "store"), "source": "molen.yaml"}
    assert data["tracking.uri"] == {
        "value": f"sqlite:///{project.state_dir / 'molen.db'}",
        "source": "default",
    }
    assert data["objects.verify"] == {"value": True, "source": "default"}


def test_cli_global_flags_are_flag_source(project: Project, tmp_path: Path) -> None:
    result = molen(
        "-C",
        str(project.root),
        "--tracking-uri",
        "sqlite:////flag/m.db",
        "config",
        "show",
        "-f",
        "json",
        cwd=tmp_path,
        MOLEN_TRACKING_URI="sqlite:////env/m.db",
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["tracking.uri"] == {"value": "sqlite:////flag/m.db", "source": "flag"}
    assert data["tracking.experiment"]["source"] == "molen.yaml"


def test_cli_config_show_table(project: Project) -> None:
    result = molen("config", "show", cwd=project.root, MOLEN_OBJECTS_VERIFY="off")
    assert result.returncode == 0, result.stderr
    assert str(project.root) in result.stdout
    assert "env MOLEN_OBJECTS_VERIFY" in result.stdout
    for setting in SETTINGS:
        assert setting.key in result.stdout


def test_cli_config_show_outside_a_project(tmp_path: Path) -> None:
    result = molen("config", "show", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "no project" in result.stdout
    assert "tracking.uri" in result.stdout
    as_json = molen("config", "show", "-f", "json", cwd=tmp_path)
    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout)["tracking.uri"] == {"value": None, "source": "default"}


def test_cli_bad_setting_is_one_error_line(project: Project) -> None:
    result = molen("config", "show", cwd=project.root, MOLEN_TRACKING_FLUSH_INTERVAL="abc")
    assert result.returncode == 2
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error:")
    assert "tracking.flush_interval" in lines[0]
    assert "MOLEN_TRACKING_FLUSH_INTERVAL" in lines[0]


def test_cli_invalid_yaml(project: Project) -> None:
    write_config(project, "tracking: [\n")
    result = molen("config", "show", cwd=project.root)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert CONFIG_NAME in result.stderr
    assert "not valid YAML" in result.stderr


def test_cli_missing_project_folder(tmp_path: Path) -> None:
    result = molen("-C", str(tmp_path / "nope"), "config", "show", cwd=tmp_path)
    assert result.returncode == 3
    assert "no such folder" in result.stderr


def test_the_parsed_config_is_kept_and_refreshed_when_the_file_changes(project: Project) -> None:
    import molen.config as config

    write_config(project, "tracking:\n  experiment: first\n")
    assert load_settings(project.root)["tracking.experiment"] == "first"
    kept = json.loads((project.state_dir / "settings.json").read_text())
    assert kept["data"] == {"tracking": {"experiment": "first"}}
    config._file_cache.clear()  # a new process: answered from settings.json, no YAML parse
    original = config._parse_config_text
    config._parse_config_text = lambda text, path: (_ for _ in ()).throw(AssertionError("parsed"))
    try:
        assert load_settings(project.root)["tracking.experiment"] == "first"
    finally:
        config._parse_config_text = original
    before = project.config_path.stat()
    write_config(project, "tracking:\n  experiment: other\n")  # same size, new content…
    os.utime(project.config_path, ns=(before.st_atime_ns, before.st_mtime_ns))  # …and same mtime
    assert load_settings(project.root)["tracking.experiment"] == "other"
    config._file_cache.clear()
    assert load_settings(project.root)["tracking.experiment"] == "other"
    (project.state_dir / "settings.json").write_text("{not json")  # a damaged copy is ignored
    config._file_cache.clear()
    assert load_settings(project.root)["tracking.experiment"] == "other"
    write_config(project, "tracking:\n  experiment: 2026-01-01\n")  # a date: not kept as JSON
    config._file_cache.clear()
    assert str(load_settings(project.root)["tracking.experiment"]) == "2026-01-01"


def test_an_empty_environment_variable_counts_as_unset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """CI systems pass a secret that is not set as an empty string."""
    monkeypatch.setenv("MOLEN_OBJECTS_S3_ENDPOINT_URL", "")
    monkeypatch.setenv("MOLEN_DATA_JOBS", "")
    settings = load_settings(tmp_path, require_project=False)
    assert settings["objects.s3_endpoint_url"] is None and settings["data.jobs"] == 16


def test_config_show_masks_a_database_password(project: Project) -> None:
    url = "postgresql+psycopg://alice:s3cr3t@db.example.com/molen"
    shown = subprocess.run(
        [sys.executable, "-m", "molen", "config", "show", "-f", "json"],
        cwd=project.root,
        capture_output=True,
        text=True,
        env={**os.environ, "MOLEN_TRACKING_URI": url},
    )
    assert shown.returncode == 0 and "s3cr3t" not in shown.stdout
    assert (
        json.loads(shown.stdout)["tracking.uri"]["value"]
        == "postgresql+psycopg://alice:***@db.example.com/molen"
    )


def test_a_relative_prediction_log_is_relative_to_the_project(project: Project) -> None:
    with open(project.config_path, "a") as config:
        config.write("serving:\n  prediction_log: logs/predictions\n")
    sub = project.root / "src"
    sub.mkdir()
    assert load_settings(sub)["serving.prediction_log"] == str(project.root / "logs" / "predictions")
