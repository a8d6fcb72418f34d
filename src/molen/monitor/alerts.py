"""Alert rules on a monitoring report, a webhook to tell someone, a command to act.

Rules live in ``molen.yaml``::

    monitor:
      alerts:
        - when: drifted_share > 0.3        # share of drifted input features
        - when: accuracy_drop > 0.05       # training metric minus the one realized from feedback
        - when: prediction_drift > 0       # 1 when the predictions drifted
      webhook: https://hooks.example.com/T000/B000   # optional: a JSON POST per alert

Quantities: ``drifted_share``, ``prediction_drift`` (0 or 1), ``quality_issues`` (count),
``feedback_coverage``, ``rows``, and for each performance metric ``M`` both ``M`` (realized)
and ``M_drop`` (training value minus realized). A rule whose quantity is unknown in a report
(no feedback yet) does not fire. The webhook is retried with backoff; a webhook that keeps failing
is reported but never changes the alert's exit code.
"""

from __future__ import annotations

import json
import logging
import re
import time
import urllib.error
import urllib.request
from typing import TYPE_CHECKING, Any, NamedTuple

from molen.errors import InvalidValueError

if TYPE_CHECKING:
    from molen.workspace import Workspace

__all__ = ["AlertRule", "act_on_alert", "apply_rules", "evaluate", "load_alert_rules", "notify"]

log = logging.getLogger("molen.monitor")
_RULE = re.compile(r"\s*([a-z_][a-z0-9_]*)\s*(>=|<=|>|<)\s*(-?\d+(?:\.\d+)?)\s*")


class AlertRule(NamedTuple):
    """``quantity op value``, as written in ``molen.yaml``."""

    text: str
    quantity: str
    op: str
    value: float


def load_alert_rules(config: dict[str, Any]) -> tuple[list[AlertRule], str | None]:
    """The rules and the webhook URL of the ``monitor:`` section of a parsed ``molen.yaml``."""
    section = config.get("monitor") or {}
    if not isinstance(section, dict):
        raise InvalidValueError("molen.yaml: monitor must be a mapping (alerts:, webhook:)")
    rules = []
    for number, item in enumerate(section.get("alerts") or [], 1):
        text = item.get("when") if isinstance(item, dict) else None
        found = _RULE.fullmatch(text) if isinstance(text, str) else None
        if found is None:
            raise InvalidValueError(
                f"molen.yaml: monitor.alerts[{number}] needs 'when: QUANTITY > NUMBER', as in "
                "'when: drifted_share > 0.3'"
            )
        rules.append(AlertRule(str(text).strip(), found.group(1), found.group(2), float(found.group(3))))
    webhook = section.get("webhook")
    if webhook is not None and (
        not isinstance(webhook, str) or not webhook.startswith(("http://", "https://"))
    ):
        raise InvalidValueError("molen.yaml: monitor.webhook must be an http(s):// URL")
    return rules, webhook


def quantities(report: dict[str, Any]) -> dict[str, float]:
    """The numbers rules can name, from a monitoring report."""
    found: dict[str, float] = {
        "drifted_share": float(report["data_drift"]["drifted_share"]),
        "quality_issues": float(len(report["quality"])),
        "rows": float(report["rows"]),
        "feedback_coverage": float(report["performance"]["coverage"]),
    }
    if "prediction_drift" in report:
        found["prediction_drift"] = 1.0 if report["prediction_drift"]["dataset_drift"] else 0.0
    performance = report["performance"]
    training = performance.get("training_metrics") or {}
    for name, value in (performance.get("metrics") or {}).items():
        found[name] = float(value)
        if name in training:
            found[f"{name}_drop"] = float(training[name]) - float(value)
    return found


def evaluate(rules: list[AlertRule], report: dict[str, Any]) -> list[dict[str, Any]]:
    """The rules that fire on ``report``, with the value that made them fire."""
    known = quantities(report)
    fired = []
    for rule in rules:
        value = known.get(rule.quantity)
        if value is None:
            continue
        hit = {
            ">": value > rule.value,
            ">=": value >= rule.value,
            "<": value < rule.value,
            "<=": value <= rule.value,
        }
        if hit[rule.op]:
            fired.append({"rule": rule.text, "value": value})
    return fired


def notify(url: str, payload: dict[str, Any], *, attempts: int = 4, backoff: float = 0.5) -> bool:
    """POST ``payload`` as JSON to ``url``, retrying with exponential backoff; True if delivered."""
    body = json.dumps(payload, default=str).encode()
    for attempt in range(attempts):
        request = urllib.request.Request(
            url, data=body, headers={"Content-Type": "application/json"}, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:  # the URL the user configured
                if 200 <= response.status < 300:
                    return True
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            log.warning("webhook %s: attempt %d failed: %s", url, attempt + 1, exc)
        if attempt < attempts - 1:
            time.sleep(backoff * 2**attempt)
    return False


def apply_rules(report: dict[str, Any], workspace: Workspace) -> list[dict[str, Any]]:
    """Apply the project's alert rules to ``report``: adds ``alerts`` and, when one fires, makes
    the status ``alert``. Returns the rules that fired."""
    from molen.config import project_config

    project = workspace.settings.project
    rules, _ = load_alert_rules(project_config(project)) if project is not None else ([], None)
    fired = evaluate(rules, report)
    report["alerts"] = fired
    if fired:
        report["status"] = "alert"
    return fired


def act_on_alert(
    report: dict[str, Any], workspace: Workspace, *, report_path: Any = None, on_alert: str | None = None
) -> None:
    """On an alert: tell the webhook and run ``on_alert`` (after the report is written, so the
    command can read it; the command's output goes to stderr, never into a JSON report on stdout,
    and its exit code is kept in ``on_alert_exit_code``)."""
    import subprocess
    import sys

    from molen.config import project_config

    if report["status"] != "alert":
        return
    project = workspace.settings.project
    _, webhook = load_alert_rules(project_config(project)) if project is not None else ([], None)
    if webhook:
        payload = {
            "model": report["model"],
            "uri": report["uri"],
            "status": report["status"],
            "alerts": report.get("alerts", []),
            "drifted_share": report["data_drift"]["drifted_share"],
            "window": report["window"],
            "report": str(report_path) if report_path else None,
        }
        if not notify(webhook, payload):
            print(f"warning: the webhook {webhook} could not be reached; the alert stands", file=sys.stderr)
    if on_alert:
        sys.stdout.flush()
        done = subprocess.run(on_alert, shell=True, check=False, stdout=sys.stderr)  # the user's own command
        report["on_alert_exit_code"] = done.returncode
        if done.returncode:
            print(f"warning: --on-alert command exited {done.returncode}", file=sys.stderr)
