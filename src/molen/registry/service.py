"""The model registry: names, versions, aliases, and loading a model by any of them.

A model URI is one of::

    churn/3            version 3 of the registered model churn
    churn@production   the version the alias production points at
    churn@latest       the highest version (``latest`` is computed, never stored)
    run:RUN/model      the package a run logged at artifact path ``model`` (RUN may be a prefix)

(``models:/churn/3`` and ``models:/churn@production``, MLflow's spelling, are accepted too.)
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

from molen.entities import AliasEvent, ModelVersion, RegisteredModel
from molen.errors import ConflictError, InvalidNameError, InvalidValueError, NotFoundError, UsageError
from molen.models.package import check_model_name, load_package, manifest_artifact, read_manifest
from molen.workspace import Workspace, open_workspace

if TYPE_CHECKING:
    from molen.models.predictor import Predictor

__all__ = [
    "ModelRef",
    "alias_history",
    "delete_version",
    "get_version",
    "list_models",
    "list_versions",
    "load_model",
    "parse_model_uri",
    "register_package",
    "register_run",
    "resolve",
    "rollback_alias",
    "rollback_on",
    "rollback_target",
    "set_alias",
]

LATEST = "latest"
_ALIAS = re.compile(r"[A-Za-z][A-Za-z0-9_\-]{0,63}")


class ModelRef(NamedTuple):
    """A parsed model URI: ``kind`` is ``version``, ``alias``, ``latest`` or ``run``."""

    kind: str
    name: str  # the model name, or the run id (prefix) for kind ``run``
    version: int | None = None
    alias: str | None = None
    path: str = "model"


class Resolved(NamedTuple):
    """Where a model URI points: the package hash, and the version when it is registered."""

    digest: str
    version: ModelVersion | None
    run_id: str | None
    artifact_path: str


def parse_model_uri(uri: str) -> ModelRef:
    """The :class:`ModelRef` of ``uri``; :class:`UsageError` explains the accepted forms."""
    text = uri.strip()
    if text.startswith("models:/"):
        text = text[len("models:/") :]
    if text.startswith("run:"):
        run, _, path = text[4:].partition("/")
        if not run:
            raise UsageError(f"{uri!r}: name the run, as in run:3f2a/model")
        return ModelRef("run", run, path=path.strip("/") or "model")
    if "@" in text:
        name, _, alias = text.partition("@")
        check_model_name(name)
        if alias == LATEST:
            return ModelRef("latest", name)
        check_alias(alias)
        return ModelRef("alias", name, alias=alias)
    if "/" in text:
        name, _, number = text.partition("/")
        check_model_name(name)
        if not number.isdigit() or int(number) < 1:
            raise UsageError(f"{uri!r}: the version after '/' is a number from 1, as in {name}/3")
        return ModelRef("version", name, version=int(number))
    if text and _looks_like_name(text):
        raise UsageError(f"{uri!r} names no version: use {text}/VERSION, {text}@ALIAS or {text}@latest")
    raise UsageError(f"{uri!r} is not a model URI: use NAME/VERSION, NAME@ALIAS, NAME@latest or run:RUN/PATH")


def _looks_like_name(text: str) -> bool:
    try:
        check_model_name(text)
    except InvalidNameError:
        return False
    return True


def check_alias(alias: str) -> str:
    """``alias`` if it can name an alias (a letter, then letters, digits, ``_``, ``-``)."""
    if not _ALIAS.fullmatch(alias) or alias == LATEST:
        raise InvalidNameError(
            f"alias {alias!r} is not allowed: start with a letter, then letters, digits, '_' or '-'"
            + ("; 'latest' always means the highest version" if alias == LATEST else "")
        )
    return alias


def _user() -> str | None:
    from molen.tracking import capture

    return capture.environment().user


# -- registering ---------------------------------------------------------------------------------------


def register_package(
    workspace: Workspace,
    name: str,
    *,
    run_id: str | None,
    artifact_path: str,
    digest: str,
    flavor: str,
    description: str | None = None,
    version: int | None = None,
) -> ModelVersion:
    """Record the package ``digest`` as the next version of ``name`` (or as ``version``, when
    copying a version from another registry)."""
    check_model_name(name)
    return workspace.metadata.registry.create_version(
        name,
        run_id=run_id,
        artifact_path=artifact_path,
        digest=digest,
        flavor=flavor,
        user=_user(),
        description=description,
        number=version,
    )


def register_run(
    run: str, name: str, *, artifact_path: str = "model", workspace: Workspace | None = None
) -> ModelVersion:
    """Register the model a run logged (at ``artifact_path``) as the next version of ``name``."""
    workspace = workspace or open_workspace()
    store = workspace.metadata
    record = store.get_run(store.resolve_run_id(run))
    artifact = manifest_artifact(record.artifacts, artifact_path)
    if artifact is None:
        logged = sorted(
            {a.path.rsplit("/", 1)[0] for a in record.artifacts if a.path.endswith("/molen-model.json")}
        )
        hint = f"; it logged models at: {', '.join(logged)}" if logged else "; it logged no model"
        raise NotFoundError(f"run {record.id} has no model at {artifact_path!r}{hint}")
    manifest = read_manifest(workspace.objects, artifact.digest)
    return register_package(
        workspace,
        name,
        run_id=record.id,
        artifact_path=artifact_path,
        digest=artifact.digest,
        flavor=manifest["flavor"],
        description=manifest.get("description"),
    )


# -- reading ------------------------------------------------------------------------------------------


def list_models(*, workspace: Workspace | None = None) -> list[RegisteredModel]:
    """Every registered model, by name."""
    return (workspace or open_workspace()).metadata.registry.list_models()


def list_versions(name: str, *, workspace: Workspace | None = None) -> list[ModelVersion]:
    """Every version of ``name``, newest first."""
    return (workspace or open_workspace()).metadata.registry.list_versions(check_model_name(name))


def get_version(uri: str, *, workspace: Workspace | None = None) -> ModelVersion:
    """The registered version ``uri`` (``NAME/V``, ``NAME@ALIAS``, ``NAME@latest``) names."""
    resolved = resolve(uri, workspace=workspace)
    if resolved.version is None:
        raise UsageError(f"{uri!r} is not a registered model version; register it with molen models register")
    return resolved.version


def resolve(uri: str | ModelRef, *, workspace: Workspace | None = None) -> Resolved:
    """Where ``uri`` points (see the module docstring)."""
    workspace = workspace or open_workspace()
    ref = uri if isinstance(uri, ModelRef) else parse_model_uri(uri)
    store = workspace.metadata
    registry = store.registry
    if ref.kind == "run":
        record = store.get_run(store.resolve_run_id(ref.name))
        artifact = manifest_artifact(record.artifacts, ref.path)
        if artifact is None:
            raise NotFoundError(f"run {record.id} has no model at {ref.path!r}")
        produced = [v for v in registry.versions_of_runs([record.id]) if v.digest == artifact.digest]
        return Resolved(artifact.digest, produced[0] if produced else None, record.id, ref.path)
    if ref.kind == "version":
        assert ref.version is not None
        version = registry.get_version(ref.name, ref.version)
    elif ref.kind == "latest":
        version = registry.latest_version(ref.name)
    else:
        assert ref.alias is not None
        number = registry.alias_version(ref.name, ref.alias)
        if number is None:
            registry.list_versions(ref.name)  # says so when the model itself is unknown
            raise NotFoundError(
                f"{ref.name} has no alias {ref.alias!r}; "
                f"set it with: molen models alias {ref.name} VERSION {ref.alias}"
            )
        version = registry.get_version(ref.name, number)
    if version.flavor == "mlflow":  # registered through molen server's MLflow API: MLflow's format
        raise UsageError(
            f"{version.name}/{version.version} was logged by MLflow: load it with "
            f"mlflow.pyfunc.load_model('models:/{version.name}/{version.version}') against this server"
        )
    return Resolved(version.digest, version, version.run_id, version.artifact_path)


def load_model(
    uri: str,
    *,
    workspace: Workspace | None = None,
    extra_columns: str | None = None,
    unseen_categories: str = "refuse",
) -> Predictor:
    """The model ``uri`` names, ready to predict; every byte checked against its hash.

    Example::

        model = molen.load_model("churn@production")
        model.predict(frame)
    """
    from molen.models.predictor import Predictor

    workspace = workspace or open_workspace()
    found = _resolve_quick(uri, workspace) or resolve(uri, workspace=workspace)
    model, manifest = load_package(workspace.objects, found.digest)
    manifest.setdefault("artifact_path", found.artifact_path)
    version = found.version
    return Predictor(
        model,
        manifest,
        name=version.name if version else manifest.get("name"),
        version=version.version if version else None,
        digest=found.digest,
        aliases=version.aliases if version else (),
        extra_columns=extra_columns or workspace.settings["models.extra_columns"],
        unseen_categories=unseen_categories,
    )


def _resolve_quick(uri: str, workspace: Workspace) -> Resolved | None:
    """The registered version from a SQLite store without SQLAlchemy (None: ask the full store)."""
    from molen.stores.metadata.lite import model_version_lite

    try:
        ref = parse_model_uri(uri)
    except UsageError:
        return None
    if ref.kind == "run":
        return None
    found = model_version_lite(workspace.settings["tracking.uri"] or "", ref.name, ref.version, ref.alias)
    if found is None:
        return None
    return Resolved(found.digest, found, found.run_id, found.artifact_path)


# -- aliases and deletion -----------------------------------------------------------------------------


def set_alias(name: str, version: int, alias: str, *, workspace: Workspace | None = None) -> AliasEvent:
    """Point ``name@alias`` at ``version``; the move is kept in the alias history."""
    workspace = workspace or open_workspace()
    return workspace.metadata.registry.set_alias(
        check_model_name(name), check_alias(alias), version, user=_user()
    )


def remove_alias(name: str, alias: str, *, workspace: Workspace | None = None) -> AliasEvent:
    """Remove ``name@alias`` (kept in the history as a ``remove``)."""
    workspace = workspace or open_workspace()
    return workspace.metadata.registry.set_alias(
        check_model_name(name), check_alias(alias), None, user=_user(), action="remove"
    )


def alias_history(
    name: str, alias: str | None = None, *, workspace: Workspace | None = None
) -> list[AliasEvent]:
    """Every move of ``name``'s aliases (or one alias), oldest first."""
    workspace = workspace or open_workspace()
    return workspace.metadata.registry.alias_history(check_model_name(name), alias)


def _holders(events: list[AliasEvent]) -> list[int]:
    """The stack of versions an alias held: a set pushes, a rollback pops, a removal clears."""
    stack: list[int] = []
    for event in events:
        if event.action == "remove":
            stack.clear()
        elif event.action == "rollback":
            if stack:
                stack.pop()
        elif event.version is not None:
            stack.append(event.version)
    return stack


def rollback_target(name: str, alias: str) -> Callable[[list[AliasEvent]], int]:
    """The rule of a rollback, given the alias's history: the version it held before its last
    move (the tracking server applies the same rule)."""

    def target_of(events: list[AliasEvent]) -> int:
        if not events:
            raise NotFoundError(f"{name} has no alias {alias!r} to roll back")
        stack = _holders(events)
        if len(stack) < 2:
            raise ConflictError(f"{name}@{alias} has no previous version to roll back to")
        return stack[-2]

    return target_of


def rollback_on(registry: Any, name: str, alias: str, user: str | None) -> AliasEvent:
    """Roll ``name@alias`` back in ``registry`` by :func:`rollback_target`'s rule, in one
    transaction (the tracking server calls this too)."""
    wanted: list[int] = []
    rule = rollback_target(name, alias)

    def target_of(events: list[AliasEvent]) -> int:
        wanted.append(rule(events))
        return wanted[-1]

    try:
        event: AliasEvent = registry.rollback_alias(name, alias, target_of, user=user)
        return event
    except NotFoundError:
        if not wanted:
            raise
        raise ConflictError(
            f"{name}@{alias} would roll back to version {wanted[0]}, which was deleted; "
            f"move it by hand: molen models alias {name} VERSION {alias}"
        ) from None


def rollback_alias(name: str, alias: str, *, workspace: Workspace | None = None) -> AliasEvent:
    """Move ``name@alias`` back to the version it held before its last move.

    Repeated rollbacks walk further back (3 → 2 → 1); :class:`ConflictError` when there is
    nothing to go back to or that version was deleted.
    """
    workspace = workspace or open_workspace()
    check_model_name(name)
    check_alias(alias)
    return rollback_on(workspace.metadata.registry, name, alias, _user())


def delete_version(name: str, version: int, *, workspace: Workspace | None = None) -> None:
    """Delete ``name/version`` from the registry (refused while an alias points at it).

    The run and its artifacts stay; only the registration goes.
    """
    workspace = workspace or open_workspace()
    workspace.metadata.registry.delete_version(check_model_name(name), version)


def package_manifest(digest: str, *, workspace: Workspace | None = None) -> dict[str, Any]:
    """The manifest of the package ``digest`` (hash-checked)."""
    workspace = workspace or open_workspace()
    return read_manifest(workspace.objects, digest)


def parse_version(text: str) -> int:
    """A version number given on the command line."""
    if not text.isdigit() or int(text) < 1:
        raise InvalidValueError(f"version {text!r} is not a number from 1")
    return int(text)


def model_card(uri: str, *, html: bool = False, workspace: Workspace | None = None) -> str:
    """The model card of ``uri`` rendered now: Markdown, or a self-contained HTML page. Unlike
    the card stored at log time, it has the registered version, its aliases and the run's
    metrics as they are now."""
    import json

    from molen.errors import NotFoundError as Missing
    from molen.models.card import card_html, card_markdown
    from molen.models.package import read_file

    workspace = workspace or open_workspace()
    found = resolve(uri, workspace=workspace)
    manifest = read_manifest(workspace.objects, found.digest)
    if found.run_id is not None:
        try:
            metrics = workspace.metadata.get_run(found.run_id).metrics
            manifest["metrics"] = {key: value for key, value in metrics.items() if value == value}
        except Missing:
            pass
    profile = None
    if "profile.json" in manifest["files"]:
        profile = json.loads(read_file(workspace.objects, manifest, "profile.json"))
    version = found.version
    markdown = card_markdown(
        {**manifest, "digest": found.digest},
        version=version.version if version else None,
        aliases=version.aliases if version else (),
        profile=profile,
    )
    if not html:
        return markdown
    title = f"Model card: {version.uri if version else manifest.get('name') or 'model'}"
    return card_html(markdown, title=title, profile=profile)
