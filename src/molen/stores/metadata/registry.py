"""The model registry's tables: versions, aliases with their history, gate verdicts.

A part of :class:`~molen.stores.metadata.sql.SqlMetadataStore` (``store.registry``), on the
same engine and the same error translation. Version numbers are allocated inside the write
transaction that inserts them; on PostgreSQL two writers may pick the same number, and the
loser retries with the next one.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from molen.entities import AliasEvent, GateRecord, ModelVersion, RegisteredModel
from molen.errors import ConflictError, NotFoundError
from molen.stores.metadata import schema as t
from molen.stores.metadata.sql import now_ms, translated

if TYPE_CHECKING:
    from molen.stores.metadata.sql import SqlMetadataStore

__all__ = ["SqlRegistry"]

_ATTEMPTS = 8


class SqlRegistry:
    """Registered models, their versions and aliases, in the metadata store's database."""

    def __init__(self, store: SqlMetadataStore) -> None:
        self.store = store

    # -- versions ------------------------------------------------------------------------------

    @translated
    def create_version(
        self,
        name: str,
        *,
        run_id: str | None,
        artifact_path: str,
        digest: str,
        flavor: str,
        user: str | None = None,
        description: str | None = None,
        number: int | None = None,
    ) -> ModelVersion:
        """Register the package ``digest`` as the next version of ``name`` (created if new), or
        as version ``number`` (a :class:`ConflictError` if that number is taken)."""
        for attempt in range(_ATTEMPTS):
            try:
                with self.store._write(savepoint=True) as connection:
                    now = now_ms()
                    exists = connection.execute(
                        select(t.registered_models.c.name).where(t.registered_models.c.name == name)
                    ).first()
                    if exists is None:
                        connection.execute(insert(t.registered_models), {"name": name, "created_at": now})
                    latest = connection.execute(
                        select(func.max(t.model_versions.c.version)).where(t.model_versions.c.name == name)
                    ).scalar()
                    version = int(latest or 0) + 1 if number is None else number
                    row = {
                        "name": name,
                        "version": version,
                        "run_id": run_id,
                        "artifact_path": artifact_path,
                        "digest": digest,
                        "flavor": flavor,
                        "created_at": now,
                        "user": user,
                        "description": description,
                    }
                    connection.execute(insert(t.model_versions), row)
                    return ModelVersion(
                        name, version, run_id, artifact_path, digest, flavor, now, user, description
                    )
            except IntegrityError:
                if number is not None:
                    raise ConflictError(f"{name} already has a version {number}") from None
                if attempt == _ATTEMPTS - 1:
                    raise ConflictError(
                        f"could not register a new version of {name!r}: too many concurrent "
                        "registrations; retry"
                    ) from None
        raise AssertionError("unreachable")  # pragma: no cover

    @translated
    def get_version(self, name: str, version: int) -> ModelVersion:
        """Version ``version`` of ``name``; :class:`NotFoundError` names what exists instead."""
        with self.store._read() as connection:
            row = connection.execute(
                select(t.model_versions).where(
                    (t.model_versions.c.name == name) & (t.model_versions.c.version == version)
                )
            ).first()
            if row is None:
                raise self._missing_version(connection, name, version)
            return self._with_aliases(connection, [row])[0]

    @translated
    def latest_version(self, name: str) -> ModelVersion:
        """The highest version of ``name``."""
        with self.store._read() as connection:
            row = connection.execute(
                select(t.model_versions)
                .where(t.model_versions.c.name == name)
                .order_by(t.model_versions.c.version.desc())
                .limit(1)
            ).first()
            if row is None:
                raise self._missing_model(connection, name)
            return self._with_aliases(connection, [row])[0]

    @translated
    def list_versions(self, name: str) -> list[ModelVersion]:
        """Every version of ``name``, newest first."""
        with self.store._read() as connection:
            rows = connection.execute(
                select(t.model_versions)
                .where(t.model_versions.c.name == name)
                .order_by(t.model_versions.c.version.desc())
            ).all()
            if not rows:
                raise self._missing_model(connection, name)
            return self._with_aliases(connection, rows)

    @translated
    def versions_of_runs(self, run_ids: list[str]) -> list[ModelVersion]:
        """The model versions the runs ``run_ids`` produced."""
        if not run_ids:
            return []
        with self.store._read() as connection:
            rows = connection.execute(
                select(t.model_versions)
                .where(t.model_versions.c.run_id.in_(run_ids))
                .order_by(t.model_versions.c.name, t.model_versions.c.version)
            ).all()
            return self._with_aliases(connection, rows)

    @translated
    def delete_version(self, name: str, version: int) -> None:
        """Delete a version; refused with :class:`ConflictError` while an alias points at it."""
        with self.store._write() as connection:
            self._lock_model(connection, name)
            found = connection.execute(
                select(t.model_versions.c.version).where(
                    (t.model_versions.c.name == name) & (t.model_versions.c.version == version)
                )
            ).first()
            if found is None:
                raise self._missing_version(connection, name, version)
            holders = connection.execute(
                select(t.model_aliases.c.alias).where(
                    (t.model_aliases.c.name == name) & (t.model_aliases.c.version == version)
                )
            ).all()
            if holders:
                names = ", ".join(f"@{row[0]}" for row in holders)
                raise ConflictError(
                    f"{name}/{version} is still {names}; move the alias first "
                    f"(molen models alias {name} VERSION {holders[0][0]})"
                )
            connection.execute(
                delete(t.model_versions).where(
                    (t.model_versions.c.name == name) & (t.model_versions.c.version == version)
                )
            )

    # -- models --------------------------------------------------------------------------------

    @translated
    def list_models(self) -> list[RegisteredModel]:
        """Every registered model with its latest version and aliases, by name."""
        with self.store._read() as connection:
            counts = {
                row[0]: (row[1], row[2])
                for row in connection.execute(
                    select(
                        t.model_versions.c.name,
                        func.max(t.model_versions.c.version),
                        func.count(),
                    ).group_by(t.model_versions.c.name)
                )
            }
            aliases: dict[str, dict[str, int]] = {}
            for name, alias, version in connection.execute(
                select(t.model_aliases.c.name, t.model_aliases.c.alias, t.model_aliases.c.version)
            ):
                aliases.setdefault(name, {})[alias] = version
            return [
                RegisteredModel(
                    name=row.name,
                    created_at=row.created_at,
                    description=row.description,
                    latest_version=counts.get(row.name, (None, 0))[0],
                    version_count=counts.get(row.name, (None, 0))[1],
                    aliases=dict(sorted(aliases.get(row.name, {}).items())),
                )
                for row in connection.execute(
                    select(t.registered_models).order_by(t.registered_models.c.name)
                )
            ]

    # -- aliases -------------------------------------------------------------------------------

    @translated
    def alias_version(self, name: str, alias: str) -> int | None:
        """The version ``name@alias`` points at, or ``None``."""
        with self.store._read() as connection:
            return self._holder(connection, name, alias)

    @translated
    def set_alias(
        self, name: str, alias: str, version: int | None, *, user: str | None, action: str = "set"
    ) -> AliasEvent:
        """Point ``name@alias`` at ``version`` (``None`` removes it), recording the move."""
        with self.store._write() as connection:
            return self._move(connection, name, alias, version, user=user, action=action)

    @translated
    def rollback_alias(
        self, name: str, alias: str, target_of: Callable[[list[AliasEvent]], int], *, user: str | None
    ) -> AliasEvent:
        """Move ``name@alias`` to ``target_of(its history)``, in one transaction with reading
        the history, so concurrent moves cannot interleave."""
        with self.store._write() as connection:
            self._lock_model(connection, name)
            rows = connection.execute(
                select(t.alias_events)
                .where((t.alias_events.c.name == name) & (t.alias_events.c.alias == alias))
                .order_by(t.alias_events.c.id)
            )
            events = [_event(row) for row in rows]
            return self._move(connection, name, alias, target_of(events), user=user, action="rollback")

    def _lock_model(self, connection: Connection, name: str) -> None:
        """Hold the model's row until the transaction ends: moves of its aliases and deletions
        of its versions happen one at a time (SQLite's BEGIN IMMEDIATE already serializes)."""
        found = connection.execute(
            select(t.registered_models.c.name).where(t.registered_models.c.name == name).with_for_update()
        ).first()
        if found is None:
            raise self._missing_model(connection, name)

    def _move(
        self,
        connection: Connection,
        name: str,
        alias: str,
        version: int | None,
        *,
        user: str | None,
        action: str,
    ) -> AliasEvent:
        self._lock_model(connection, name)
        if version is not None:
            exists = connection.execute(
                select(t.model_versions.c.version).where(
                    (t.model_versions.c.name == name) & (t.model_versions.c.version == version)
                )
            ).first()
            if exists is None:
                raise self._missing_version(connection, name, version)
        previous = self._holder(connection, name, alias)
        if version is None and previous is None:
            raise NotFoundError(f"{name} has no alias {alias!r}")
        now = now_ms()
        where = (t.model_aliases.c.name == name) & (t.model_aliases.c.alias == alias)
        if version is None:
            connection.execute(delete(t.model_aliases).where(where))
        elif previous is None:
            connection.execute(
                insert(t.model_aliases),
                {"name": name, "alias": alias, "version": version, "updated_at": now, "user": user},
            )
        else:
            connection.execute(
                update(t.model_aliases).where(where).values(version=version, updated_at=now, user=user)
            )
        event = AliasEvent(name, alias, version, previous, action, now, user)
        connection.execute(
            insert(t.alias_events),
            {
                "name": name,
                "alias": alias,
                "version": version,
                "previous": previous,
                "action": action,
                "time": now,
                "user": user,
            },
        )
        return event

    @translated
    def alias_history(self, name: str, alias: str | None = None) -> list[AliasEvent]:
        """Every move of ``name``'s aliases (or of one alias), oldest first."""
        query = select(t.alias_events).where(t.alias_events.c.name == name)
        if alias is not None:
            query = query.where(t.alias_events.c.alias == alias)
        with self.store._read() as connection:
            return [_event(row) for row in connection.execute(query.order_by(t.alias_events.c.id))]

    # -- gate verdicts ---------------------------------------------------------------------------

    @translated
    def add_verdict(self, record: GateRecord) -> None:
        """Keep a quality-gate verdict with the candidate version."""
        with self.store._write() as connection:
            connection.execute(
                insert(t.gate_verdicts),
                {
                    "name": record.name,
                    "candidate": record.candidate,
                    "against_alias": record.against_alias,
                    "against_version": record.against_version,
                    "passed": int(record.passed),
                    "time": record.time,
                    "user": record.user,
                    "verdict": json.dumps(record.verdict, sort_keys=True),
                },
            )

    @translated
    def verdicts(self, name: str, candidate: int | None = None) -> list[GateRecord]:
        """The gate verdicts recorded for ``name`` (or one candidate version), oldest first."""
        query = select(t.gate_verdicts).where(t.gate_verdicts.c.name == name)
        if candidate is not None:
            query = query.where(t.gate_verdicts.c.candidate == candidate)
        with self.store._read() as connection:
            return [
                GateRecord(
                    row.name,
                    row.candidate,
                    row.against_alias,
                    row.against_version,
                    bool(row.passed),
                    row.time,
                    row.user,
                    json.loads(row.verdict),
                )
                for row in connection.execute(query.order_by(t.gate_verdicts.c.id))
            ]

    # -- helpers -------------------------------------------------------------------------------

    @staticmethod
    def _holder(connection: Connection, name: str, alias: str) -> int | None:
        row = connection.execute(
            select(t.model_aliases.c.version).where(
                (t.model_aliases.c.name == name) & (t.model_aliases.c.alias == alias)
            )
        ).first()
        return None if row is None else int(row[0])

    @staticmethod
    def _with_aliases(connection: Connection, rows: Any) -> list[ModelVersion]:
        names = {row.name for row in rows}
        held: dict[tuple[str, int], list[str]] = {}
        if names:
            for name, alias, version in connection.execute(
                select(t.model_aliases.c.name, t.model_aliases.c.alias, t.model_aliases.c.version)
                .where(t.model_aliases.c.name.in_(names))
                .order_by(t.model_aliases.c.alias)
            ):
                held.setdefault((name, version), []).append(alias)
        return [
            ModelVersion(
                name=row.name,
                version=row.version,
                run_id=row.run_id,
                artifact_path=row.artifact_path,
                digest=row.digest,
                flavor=row.flavor,
                created_at=row.created_at,
                user=row.user,
                description=row.description,
                aliases=tuple(held.get((row.name, row.version), ())),
            )
            for row in rows
        ]

    @staticmethod
    def _missing_model(connection: Connection, name: str) -> NotFoundError:
        known = [row[0] for row in connection.execute(select(t.registered_models.c.name).limit(20))]
        hint = f"; registered: {', '.join(sorted(known))}" if known else "; none is registered yet"
        return NotFoundError(f"no registered model {name!r}{hint}")

    def _missing_version(self, connection: Connection, name: str, version: int) -> NotFoundError:
        versions = [
            row[0]
            for row in connection.execute(
                select(t.model_versions.c.version)
                .where(t.model_versions.c.name == name)
                .order_by(t.model_versions.c.version)
            )
        ]
        if not versions:
            return self._missing_model(connection, name)
        return NotFoundError(
            f"{name} has no version {version}; versions: {', '.join(str(v) for v in versions)}"
        )


def _event(row: Any) -> AliasEvent:
    return AliasEvent(row.name, row.alias, row.version, row.previous, row.action, row.time, row.user)
