"""The web UI in a real browser: Playwright drives Debian's Chromium against a real server.

Every page must load without console errors; the filter must narrow the table, compare must
draw its charts, an alias moved from the model page must show in the history. Screenshots go to
``test-artifacts/ui/`` (look at them)."""

from __future__ import annotations

import json
import os
import shutil
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import molen_server

ROOT = Path(__file__).resolve().parent.parent
SHOTS = ROOT / "test-artifacts" / "ui"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"

pytestmark = [
    pytest.mark.skipif(
        not Path(CHROMIUM).exists(), reason="needs Chromium: scripts/bootstrap.sh --browser installs it"
    ),
    pytest.mark.xdist_group("ui"),  # one worker: one project, one browser (pytest --dist loadgroup)
]


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A project with 24 runs in two experiments (params, metric histories, artifacts) and a
    model with two versions, the first at production."""
    import numpy as np
    import pandas as pd
    from sklearn.linear_model import LogisticRegression

    import molen
    from molen.project import init_project

    root = tmp_path_factory.mktemp("ui") / "shop"
    init_project(root, experiment="churn")
    old = Path.cwd()
    os.chdir(root)
    os.environ["MOLEN_MODELS_IMPORTANCE"] = "false"
    try:
        rng = np.random.default_rng(0)
        X = pd.DataFrame(rng.normal(size=(200, 3)), columns=["a", "b", "c"])
        y = (X["a"] > 0).astype(int)
        for i in range(24):
            experiment = "churn" if i < 20 else "baseline"
            with molen.start_run(name=f"run-{i:02d}", experiment=experiment) as run:
                run.log_params({"C": 0.1 * (i + 1), "solver": "lbfgs" if i % 2 else "saga"})
                for step in range(60):
                    run.log_metric("loss", (1 + i / 10) / (step + 1), step=step)
                    run.log_metric("acc", min(0.99, 0.4 + i / 40 + step / 400), step=step)
                if i == 3:
                    run.log_text("hello from run 3\n", "notes/readme.txt")
                    run.log_dict({"layers": [64, 32]}, "config.json")
                    run.log_text("<html><body><h1>a report</h1></body></html>", "report.html")
                    import matplotlib

                    matplotlib.use("Agg")
                    import matplotlib.pyplot as plt

                    figure, axes = plt.subplots(figsize=(3, 2))
                    axes.plot([0, 1, 2], [2, 1, 3])
                    figure.savefig(root / "curve.png")
                    plt.close(figure)
                    run.log_artifact(root / "curve.png", "plots/curve.png")
                if i in (5, 6):
                    run.log_model(
                        LogisticRegression(C=0.1 * (i + 1)).fit(X, y),
                        "churn_model",
                        reference=X,
                        y_reference=y,
                    )
        from molen.registry.service import set_alias

        set_alias("churn_model", 1, "production")
    finally:
        os.environ.pop("MOLEN_MODELS_IMPORTANCE", None)
        os.chdir(old)
    yield root


@pytest.fixture(scope="module")
def server(project: Path) -> Iterator[str]:
    with molen_server(f"sqlite:///{project}/.molen/molen.db", project / ".molen" / "cache") as url:
        yield url


class Browser:
    """One Chromium page that remembers console errors and failed requests."""

    def __init__(self, page: Any) -> None:
        self.page = page
        self.errors: list[str] = []
        page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(str(e)))

    def shot(self, name: str) -> None:
        SHOTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture
def browser(chromium: Any) -> Iterator[Browser]:
    context = chromium.new_context(viewport={"width": 1400, "height": 900})
    yield Browser(context.new_page())
    context.close()


def total_shown(b: Browser) -> int:
    return int(b.page.locator("[data-total]").get_attribute("data-total"))


def test_the_runs_page_lists_pages_and_filters(server: str, browser: Browser) -> None:
    page = browser.page
    page.goto(f"{server}/")  # redirected to /ui/
    page.wait_for_selector("#runs-table .tabulator-row")
    assert total_shown(browser) == 24
    assert page.locator("#runs-table .tabulator-row").count() == 24
    assert page.locator(".tabulator-col-title", has_text="acc").count() >= 1  # metric columns chosen
    browser.shot("runs")

    page.fill("input[name=filter]", "metrics.acc > 0.9 and params.solver = 'lbfgs'")
    page.click("button[type=submit]")
    page.wait_for_function("document.querySelector('[data-total]').dataset.total !== '24'")
    # acc ends at min(0.99, 0.4 + i/40 + 59/400): above 0.9 from i = 15; lbfgs for odd i
    assert total_shown(browser) == len([i for i in range(24) if 0.4 + i / 40 + 59 / 400 > 0.9 and i % 2])
    browser.shot("runs-filtered")

    page.fill("input[name=filter]", "metrics.acc >>> 1")
    page.click("button[type=submit]")
    page.wait_for_selector("[role=alert]")
    assert ">>" in page.inner_text("[role=alert]") or "expected" in page.inner_text("[role=alert]")
    assert total_shown(browser) == 0

    page.goto(f"{server}/ui/#/runs?experiment=baseline")
    page.wait_for_function("document.querySelector('[data-total]')?.dataset.total === '4'")
    assert browser.errors == [], browser.errors


def test_a_run_page_draws_its_curves_and_previews_artifacts(server: str, browser: Browser) -> None:
    page = browser.page
    page.goto(f"{server}/ui/")
    page.wait_for_selector("#runs-table .tabulator-row")
    page.fill("input[name=filter]", "name = 'run-03'")
    page.click("button[type=submit]")
    page.wait_for_function("document.querySelector('[data-total]').dataset.total === '1'")
    page.click("#runs-table a:has-text('run-03')")
    page.wait_for_selector("[data-chart='metric loss'] canvas")
    assert page.locator("[data-chart^='metric '] canvas").count() == 2  # loss and acc
    assert "0.4" in page.inner_text("main")  # param C of run 3
    page.click("a:has-text('notes/readme.txt')")
    page.wait_for_selector("pre:has-text('hello from run 3')")
    page.click("a:has-text('config.json')")
    page.wait_for_selector("pre:has-text('\"layers\"')")
    page.click("a:has-text('plots/curve.png')")
    page.wait_for_function("document.querySelector('.preview img')?.naturalWidth > 100")
    page.click("a:has-text('report.html')")
    frame = page.frame_locator("iframe[title='report.html']")
    frame.locator("h1:has-text('a report')").wait_for()
    page.fill("input[placeholder=tag]", "reviewed")
    page.fill("input[placeholder=value]", "yes")
    page.click("button:has-text('Set tag')")
    page.wait_for_selector("th:has-text('reviewed')")
    browser.shot("run")
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("button:has-text('Delete run')")
    page.wait_for_selector("#run-deleted")
    page.click("button:has-text('Restore')")
    page.wait_for_selector("button:has-text('Delete run')")
    assert browser.errors == [], browser.errors


def test_compare_overlays_curves_and_draws_parallel_coordinates(server: str, browser: Browser) -> None:
    page = browser.page
    page.goto(f"{server}/ui/#/runs?experiment=churn")
    page.wait_for_selector("#runs-table .tabulator-row")
    rows = page.locator("#runs-table .tabulator-row")
    for index in range(3):
        rows.nth(index).locator("input[type=checkbox]").check()
    page.click("button:has-text('Compare 3')")
    page.wait_for_selector("[data-chart='parallel coordinates'] canvas")
    page.wait_for_selector("[data-chart='metric loss'] canvas")
    assert page.locator("table.kv tr.differs").count() >= 2  # C and the metrics differ
    browser.shot("compare")
    assert browser.errors == [], browser.errors


def post(url: str, body: dict[str, Any], token: str | None = None) -> tuple[int, dict[str, Any]]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_an_alias_moved_in_the_model_page_shows_in_its_history(server: str, browser: Browser) -> None:
    page = browser.page
    page.goto(f"{server}/ui/#/models")
    page.click("a:has-text('churn_model')")
    page.wait_for_selector("text=Alias history")
    page.fill("form[aria-label='move an alias'] input[name=alias]", "staging")
    page.select_option("form[aria-label='move an alias'] select", "2")
    page.click("button:has-text('Move alias')")
    page.wait_for_selector("#alias-history td:has-text('staging')")
    assert "→ 2" in page.inner_text("#alias-history")
    assert "run-05" in page.inner_text("#versions") and "run-06" in page.inner_text("#versions")  # lineage
    page.wait_for_selector("iframe[title='model card']")
    browser.shot("model")
    assert browser.errors == [], browser.errors


def test_with_auth_viewers_read_and_only_write_tokens_act(
    project: Path, browser: Browser, tmp_path: Path
) -> None:
    from molen.server.auth import new_secret, secret_digest
    from molen.stores.metadata.sql import SqlMetadataStore

    store_url = f"sqlite:///{project}/.molen/molen.db"
    store = SqlMetadataStore(store_url)
    reader, writer = new_secret(), new_secret()
    store.create_token("viewer-ui", "read", secret_digest(reader))
    store.create_token("editor-ui", "write", secret_digest(writer))
    store.close()
    with molen_server(store_url, project / ".molen" / "cache", auth=True) as url:
        page = browser.page
        page.goto(f"{url}/ui/")
        page.wait_for_selector("#runs-table .tabulator-row")  # no token needed to look
        alias = f"{url}/api/molen/v1/ui/models/churn_model/aliases/canary"
        assert post(alias, {"version": 1})[0] == 401
        assert post(alias, {"version": 1}, reader)[0] == 403
        assert post(alias, {"version": 1}, writer)[0] == 200
        assert post(f"{url}/api/molen/v1/store/list_experiments", {})[0] == 401  # the API still needs one


def molen_cli(root: Path, *args: str) -> str:
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "molen", *args], cwd=root, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout


def git(root: Path, *args: str) -> None:
    import subprocess

    subprocess.run(["git", *args], cwd=root, check=True, capture_output=True)


def test_the_project_pages_show_data_history_the_pipeline_and_monitoring(
    project: Path, browser: Browser
) -> None:
    """`molen ui` in a project: the tracked data through git history with the runs that used
    each version, the pipeline with its stale stages, and the monitoring of a deployed model."""
    import molen

    (project / "data").mkdir(exist_ok=True)
    raw = project / "data" / "raw.csv"
    git(project, "init", "-q")
    git(project, "config", "user.email", "ui@example.com")
    git(project, "config", "user.name", "UI Test")
    for version in range(2):
        raw.write_text("a,b,c\n" + "".join(f"{i / 10 + version},{i % 3},{-i / 7}\n" for i in range(40)))
        molen_cli(project, "data", "add", "data/raw.csv")
        git(project, "add", "-A")
        git(project, "commit", "-qm", f"raw data, version {version + 1}")
        old = Path.cwd()
        os.chdir(project)
        try:
            with molen.start_run(name=f"uses-v{version + 1}") as run:
                run.log_input("data/raw.csv")
        finally:
            os.chdir(old)
    config = project / "molen.yaml"
    config.write_text(
        config.read_text()
        + "stages:\n  prepare:\n    cmd: python -c \"print('prepare')\"\n"
        + "    deps: [data/raw.csv]\n    outs: [data/clean.csv]\n"
        + "  train:\n    cmd: python -c \"print('train')\"\n"
        + "    deps: [data/clean.csv]\n    outs: [model.bin]\n"
    )
    molen_cli(
        project,
        "predict",
        "churn_model@production",
        "-i",
        "data/raw.csv",
        "-o",
        str(project / "scored.parquet"),
        "--log",
    )

    with molen_server(
        f"sqlite:///{project}/.molen/molen.db", project / ".molen" / "cache", project_root=str(project)
    ) as url:
        page = browser.page
        page.goto(f"{url}/ui/#/data")
        page.click("#data-paths a:has-text('data/raw.csv')")
        page.wait_for_selector("#data-history tbody tr:nth-child(2)")
        history = page.inner_text("#data-history")
        assert "raw data, version 2" in history and "uses-v2" in history and "uses-v1" in history
        browser.shot("data")

        page.click("header a:has-text('Pipeline')")
        page.wait_for_selector("[data-chart='pipeline'] canvas")
        stages = page.inner_text("#stages")
        assert "prepare" in stages and "never ran" in stages and "upstream stage prepare is stale" in stages
        browser.shot("pipeline")

        page.click("header a:has-text('Monitoring')")
        page.wait_for_selector("#monitor-status")
        report = page.frame_locator("iframe[title='monitoring report']")
        report.locator("h1").first.wait_for(timeout=60_000)
        assert "drift" in report.locator("body").inner_text().lower()
        assert "40 predictions" in page.inner_text("main")
        browser.shot("monitoring")
        assert browser.errors == [], browser.errors

    with molen_server(f"sqlite:///{project}/.molen/molen.db", project / ".molen" / "cache") as url:
        page = browser.page
        page.goto(f"{url}/ui/#/runs")
        page.wait_for_selector("#runs-table .tabulator-row")
        assert page.locator("header a:has-text('Pipeline')").count() == 0  # a server without a project
        request = urllib.request.Request(f"{url}/api/molen/v1/ui/project/pipeline")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=30)
        assert refused.value.code == 404 and "molen ui" in json.loads(refused.value.read())["message"]


def test_molen_ui_serves_the_project_it_runs_in(project: Path) -> None:
    import socket
    import subprocess
    import sys
    import time

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "molen", "ui", "--port", str(port)],
        cwd=project,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ui/", timeout=5) as answer:
                    assert "molen" in answer.read().decode()
                    break
            except (urllib.error.URLError, ConnectionError):
                assert time.monotonic() < deadline and process.poll() is None, "molen ui did not start"
                time.sleep(0.1)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/molen/v1/ui/project", timeout=10) as answer:
            assert json.loads(answer.read())["name"] == project.name
    finally:
        process.terminate()
        output = process.communicate(timeout=20)[0]
    assert f"molen ui on http://127.0.0.1:{port}/ui/" in output

    env = {**os.environ, "MOLEN_TRACKING_URI": "http://team.example:5000"}
    done = subprocess.run(
        [sys.executable, "-m", "molen", "ui"], cwd=project, env=env, capture_output=True, text=True
    )
    assert done.returncode == 2 and "open http://team.example:5000/ui/ in a browser" in done.stderr
