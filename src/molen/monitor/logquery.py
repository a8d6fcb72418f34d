"""SQL over one model's prediction log with DuckDB: aggregates per time bucket, never one big
DataFrame.

Every monitoring number is a ``GROUP BY`` over the log's Parquet files (streamed, in parallel,
within DuckDB's memory limit): rows and latency per bucket, counts per drift bin per feature
(:meth:`molen.models.bins.Bins.sql_index`), confusion counts and probability histograms of the
rows that have feedback, so a report over ten million rows moves a few thousand numbers into
Python. A local log is read by DuckDB's own Parquet reader; a log in object storage (``s3://…``)
through a PyArrow dataset on molen's fsspec filesystem, which DuckDB scans the same way.
"""

from __future__ import annotations

import os
from datetime import datetime
from typing import TYPE_CHECKING, Any

from molen.errors import StoreError
from molen.monitor.performance import PROBABILITY_BINS

if TYPE_CHECKING:
    from molen.models.bins import Bins

__all__ = ["LogQuery"]


def _micros(moment: datetime) -> int:
    return int(moment.timestamp() * 1_000_000)


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class LogQuery:
    """The predictions (and feedback) of ``model`` between ``since`` and ``until`` (answered by
    ``version``, or by any), bucketed by ``bucket_seconds``; shadow rows are left out (they were
    not answered)."""

    def __init__(
        self,
        root: str,
        model: str,
        since: datetime,
        until: datetime,
        *,
        bucket_seconds: int,
        version: str | None = None,
        storage_options: dict[str, Any] | None = None,
        memory_limit: str = "512MB",
    ) -> None:
        import duckdb

        self.root, self.model = root.rstrip("/"), model
        self.bucket = bucket_seconds * 1_000_000
        self.memory_limit = memory_limit
        self.connection = duckdb.connect(config={"memory_limit": memory_limit})
        self._storage_options = storage_options or {}
        self.has_predictions = self._source("predictions")
        self.has_feedback = self._source("feedback")
        self.columns = self._columns() if self.has_predictions else set()
        self.span = _micros(since), _micros(until)
        self.version = version
        self.where = self._where("")

    def _where(self, alias: str) -> str:
        stamp = f"epoch_us({alias}timestamp)"
        found = f"{stamp} >= {self.span[0]} AND {stamp} < {self.span[1]} AND {alias}role <> 'shadow'"
        if self.version is not None:
            found += f" AND {alias}version = '{self.version.replace(chr(39), '')}'"
        return found

    def _source(self, kind: str) -> bool:
        """Define the view ``kind`` over the model's files; False when there are none."""
        folder = f"{self.root}/{kind}/model={self.model}"
        if "://" not in folder:
            pattern = f"{folder}/*/*.parquet"
            if not os.path.isdir(folder) or not any(
                name.endswith(".parquet") and not name.startswith(".")
                for _, _, files in os.walk(folder)
                for name in files
            ):
                return False
            escaped = pattern.replace("'", "''")
            self.connection.execute(
                f"CREATE VIEW {kind} AS SELECT * FROM read_parquet('{escaped}', union_by_name = true)"
            )
            return True
        from molen.serving.predlog import log_dataset

        dataset = log_dataset(
            f"{self.root}/{kind}", f"model={self.model}", storage_options=self._storage_options
        )
        if dataset is None or not dataset.files:
            return False
        self.connection.register(f"{kind}_arrow", dataset)
        self.connection.execute(f"CREATE VIEW {kind} AS SELECT * FROM {kind}_arrow")
        return True

    def _columns(self) -> set[str]:
        return {row[0] for row in self.connection.execute("DESCRIBE predictions").fetchall()}

    def fetch(self, sql: str) -> list[tuple[Any, ...]]:
        """The rows of one query."""
        import duckdb

        try:
            return self.connection.execute(sql).fetchall()
        except duckdb.OutOfMemoryException:
            raise StoreError(
                f"reading the prediction log of {self.model} needs more than monitor.memory_limit "
                f"({self.memory_limit}); raise it (monitor.memory_limit in molen.yaml, or "
                "MOLEN_MONITOR_MEMORY_LIMIT=4GB) or narrow --window"
            ) from None

    def input_fields(self) -> set[str]:
        """The input columns the log holds (fields of its ``inputs`` struct)."""
        if "inputs" not in self.columns:
            return set()
        return {str(row[0]) for row in self.fetch("DESCRIBE SELECT unnest(inputs) FROM predictions")}

    # -- aggregates per bucket ------------------------------------------------------------------------

    def volume(self) -> list[tuple[Any, ...]]:
        """Per bucket: (bucket, rows, latency p50, latency p95, versions)."""
        return self.fetch(
            f"SELECT epoch_us(timestamp) // {self.bucket} AS b, count(*), "
            "approx_quantile(latency_ms, 0.5), approx_quantile(latency_ms, 0.95), "
            "string_agg(DISTINCT version, ',') "
            f"FROM predictions WHERE {self.where} GROUP BY b ORDER BY b"
        )

    def latency(self) -> tuple[float, float]:
        """Latency p50 and p95 over the whole window (t-digest estimates: constant memory)."""
        row = self.fetch(
            "SELECT approx_quantile(latency_ms, 0.5), approx_quantile(latency_ms, 0.95) "
            f"FROM predictions WHERE {self.where}"
        )[0]
        return float(row[0] or 0.0), float(row[1] or 0.0)

    def bin_counts(self, bins: Bins, expression: str, checks: dict[str, str]) -> list[tuple[Any, ...]]:
        """Per bucket and bin of ``expression``: (bucket, bin, rows, *checks) where each check is
        an SQL condition counted with ``count_if``; a NULL bin holds the missing values."""
        counted = "".join(f", count_if({condition})" for condition in checks.values())
        return self.fetch(
            f"SELECT epoch_us(timestamp) // {self.bucket} AS b, {bins.sql_index(expression)} AS k, "
            f"count(*){counted} FROM predictions WHERE {self.where} GROUP BY ALL"
        )

    def examples(self, expression: str, condition: str, limit: int = 5) -> list[str]:
        """A few distinct values of ``expression`` where ``condition`` holds."""
        rows = self.fetch(
            f"SELECT DISTINCT CAST({expression} AS VARCHAR) AS v FROM predictions "
            f"WHERE {self.where} AND {condition} ORDER BY v LIMIT {limit}"
        )
        return [str(row[0]) for row in rows]

    @staticmethod
    def _truth() -> str:
        """The latest truth per request (feedback may be sent twice)."""
        return "(SELECT request_id, arg_max(truth, timestamp) AS truth FROM feedback GROUP BY request_id)"

    def classified(self, score: str | None) -> list[tuple[Any, ...]]:
        """Rows with feedback per (bucket, prediction, truth, probability bin of ``score``):
        confusion counts and the histograms ROC AUC is computed from."""
        binned = f"least(floor({score} * {PROBABILITY_BINS}), {PROBABILITY_BINS - 1})" if score else "NULL"
        return self.fetch(
            f"SELECT epoch_us(p.timestamp) // {self.bucket} AS b, CAST(p.prediction AS VARCHAR), "
            f"CAST(f.truth AS VARCHAR), {binned} AS k, count(*) "
            f"FROM predictions p JOIN {self._truth()} f USING (request_id) "
            f"WHERE {self._where('p.')} "
            "GROUP BY ALL"
        )

    def regressed(self) -> list[tuple[Any, ...]]:
        """Rows with feedback per bucket: (bucket, n, Σ|e|, Σe², Σy, Σy²) with e = truth - prediction."""
        error = "(CAST(f.truth AS DOUBLE) - CAST(p.prediction AS DOUBLE))"
        truth = "CAST(f.truth AS DOUBLE)"
        return self.fetch(
            f"SELECT epoch_us(p.timestamp) // {self.bucket} AS b, count(*), sum(abs({error})), "
            f"sum({error} * {error}), sum({truth}), sum({truth} * {truth}) "
            f"FROM predictions p JOIN {self._truth()} f USING (request_id) "
            f"WHERE {self._where('p.')} "
            "GROUP BY b ORDER BY b"
        )

    def scores(self, score: str) -> list[tuple[Any, ...]]:
        """Every row (with feedback or not) per (bucket, probability bin of ``score``)."""
        return self.fetch(
            f"SELECT epoch_us(timestamp) // {self.bucket} AS b, "
            f"least(floor({score} * {PROBABILITY_BINS}), {PROBABILITY_BINS - 1}) AS k, count(*) "
            f"FROM predictions WHERE {self.where} AND {score} IS NOT NULL GROUP BY ALL"
        )

    def versions(self) -> list[tuple[Any, ...]]:
        """Champion and challengers side by side, over every row of the window (shadow rows
        included): per (version, role), (version, role, rows, latency p50, latency p95, rows
        with feedback, share of those right, mean absolute error, rows also answered by a
        non-shadow version, share of those where both answered the same)."""
        span = f"epoch_us(p.timestamp) >= {self.span[0]} AND epoch_us(p.timestamp) < {self.span[1]}"
        if self.has_feedback:
            truth = f"LEFT JOIN {self._truth()} f USING (request_id)"
            judged = (
                "count(f.truth), avg(CASE WHEN f.truth IS NULL THEN NULL "
                "WHEN CAST(p.prediction AS VARCHAR) = CAST(f.truth AS VARCHAR) THEN 1.0 ELSE 0.0 END), "
                "avg(abs(TRY_CAST(f.truth AS DOUBLE) - TRY_CAST(p.prediction AS DOUBLE)))"
            )
        else:
            truth, judged = "", "0, NULL, NULL"
        served = (
            "(SELECT request_id, any_value(prediction) AS answer FROM predictions "
            "WHERE role <> 'shadow' GROUP BY ALL)"
        )
        return self.fetch(
            "SELECT p.version, p.role, count(*), approx_quantile(p.latency_ms, 0.5), "
            f"approx_quantile(p.latency_ms, 0.95), {judged}, "
            "count_if(p.role = 'shadow' AND c.answer IS NOT NULL), "
            "avg(CASE WHEN p.role <> 'shadow' OR c.answer IS NULL THEN NULL "
            "WHEN CAST(p.prediction AS VARCHAR) = CAST(c.answer AS VARCHAR) THEN 1.0 ELSE 0.0 END) "
            f"FROM predictions p {truth} LEFT JOIN {served} c USING (request_id) "
            f"WHERE {span} GROUP BY p.version, p.role ORDER BY p.version, p.role"
        )

    def sample(self, columns: list[str], rows: int) -> Any:
        """At most ``rows`` rows of the window's inputs (a reservoir sample) as a pandas frame."""
        fields = ", ".join(f"inputs.{_quote(name)} AS {_quote(name)}" for name in columns)
        return self.connection.execute(
            f"SELECT * FROM (SELECT {fields}, prediction FROM predictions WHERE {self.where}) "
            f"USING SAMPLE reservoir({rows} ROWS) REPEATABLE (0)"
        ).df()

    def close(self) -> None:
        """Release DuckDB."""
        self.connection.close()
