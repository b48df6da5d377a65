"""The operator's path through the Dagster UI in a real browser (headless Chromium, driven by Playwright).

`dagster dev` on the embedded demo: open the asset graph, launch Sync Now (the `directory_sync` job, demo
partition) from the job page, watch the run succeed, then open the entitlements asset and read its row
count, freshness and passing checks, as a person would. With DIRSYNC_UPDATE_SCREENSHOTS=1 the screenshots
land in docs/screenshots/, where they illustrate the README; otherwise in a temporary folder, so a test run
leaves the work tree untouched.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from dirsync_pipeline.warehouse import reader
from tests.test_dagster_dev import dagster_dev, graphql, wait_for_location  # noqa: F401 - dagster_dev is a fixture

REPO = Path(__file__).resolve().parents[1]
SCREENSHOTS = (REPO / "docs" / "screenshots" if os.environ.get("DIRSYNC_UPDATE_SCREENSHOTS")
               else Path(tempfile.gettempdir()) / "dirsync-screenshots")
CHROMIUM = Path(os.environ.get("DIRSYNC_CHROMIUM", "/usr/bin/chromium"))  # Debian's; Playwright cannot download one here
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
VIEWPORT = {"width": 1440, "height": 900}
RUN_TIMEOUT_MS = 120_000
FRESHNESS_TIMEOUT_S = 120
EXPECT_TIMEOUT_MS = 15_000  # Playwright's 5 s default is short for the UI's first renders on 2 busy cores


def require_browser() -> None:
    """In CI a missing browser is a failure (the test must run there); on a laptop it is a clear skip."""
    missing = None
    if shutil.which(str(CHROMIUM)) is None:
        missing = f"{CHROMIUM} not found (apt-get install chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing = "the playwright package is not installed (pip install -e '.[dev]')"
    if missing and os.environ.get("CI"):
        pytest.fail(f"browser test cannot run in CI: {missing}; .ci/run must install it")
    if missing:
        pytest.skip(f"{missing}; set CI=1 to make this a failure")


@pytest.fixture(scope="module")
def ui(request: pytest.FixtureRequest) -> Iterator[tuple[str, Path]]:
    """`dagster dev` whose freshness daemon looks every 5 s instead of 30, so the UI shows a verdict soon."""
    require_browser()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FRESHNESS_DAEMON_INTERVAL_SECONDS", "5")
        url, home = request.getfixturevalue("dagster_dev")
    wait_for_location(url)
    yield url, home


@pytest.fixture(scope="module")
def page(ui):
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=EXPECT_TIMEOUT_MS)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        tab = browser.new_context(viewport=VIEWPORT).new_page()
        # Dagster greets a new browser with a "join the community" dialog: dismiss it whenever it shows up.
        tab.add_locator_handler(tab.get_by_role("button", name="Skip"), lambda skip: skip.click())
        yield tab
        browser.close()


def shoot(page, name: str) -> None:
    page.wait_for_timeout(500)  # let the last render settle so the picture shows what was asserted
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"))


def test_sync_now_from_the_dagster_ui_and_read_the_entitlements(ui, page):
    url, home = ui
    from playwright.sync_api import expect

    # 1. The asset graph: the whole pipeline, every asset in the `directory` group.
    page.goto(f"{url}/asset-groups/directory")
    for asset in ("google_users", "google_groups", "published_directory"):
        expect(page.get_by_text(asset, exact=True).first).to_be_visible()

    # 2. Sync Now: the directory_sync job, Materialize all, partition `demo` (after the first sync, which the
    #    connections sensor launched when it found the demo connection registered).
    wait_for_first_sync(url, "demo")
    page.goto(f"{url}/locations/dirsync_pipeline/jobs/directory_sync")
    expect(page.get_by_text("Sync one Google Workspace connection end to end (Sync Now)")).to_be_visible()
    page.get_by_role("button", name="Materialize all").click()
    dialog = page.get_by_role("dialog")
    expect(dialog.get_by_text("Launch runs to materialize")).to_be_visible()
    dialog.get_by_text("Select a partition or create one").click()
    page.get_by_role("checkbox", name="demo").locator("xpath=..").click()  # the box is drawn over a hidden input
    page.keyboard.press("Escape")  # closes the partition picker, not the dialog
    launch = dialog.get_by_role("button", name="Launch 1 run")
    expect(launch).to_be_enabled()
    shoot(page, "sync-now")
    launch.click()

    # 3. The run: follow the toast to the run page and wait for success.
    view = page.get_by_role("link", name="View", exact=True)
    expect(view).to_be_visible()
    run_id = view.get_attribute("href").rsplit("/", 1)[-1]
    view.click()
    expect(page.get_by_text("RUN_SUCCESS").first).to_be_visible(timeout=RUN_TIMEOUT_MS)
    expect(page.get_by_text("Success", exact=True).first).to_be_visible()  # the run's status badge caught up
    run = graphql(url, "query($id: ID!) { runOrError(runId: $id) { ... on Run { status jobName tags { key value } } } }",
                  {"id": run_id})["runOrError"]
    assert (run["status"], run["jobName"]) == ("SUCCESS", "directory_sync")
    tags = {t["key"]: t["value"] for t in run["tags"]}
    assert tags["dagster/partition"] == "demo" and tags["dirsync/trigger"] == "manual"
    page.get_by_placeholder("Filter…").fill("members.list")  # the fetch's progress lines in the run log
    progress = page.get_by_text(re.compile(r"members\.list: all \d+ groups fetched, \d+ API requests")).first
    expect(progress).to_be_visible()
    progress.evaluate("element => element.scrollIntoView({block: 'center'})")
    shoot(page, "run-success")

    # 4. The entitlements asset: row count as published, freshness evaluated, checks passed.
    entitlements = published_count(home / "data", "core.role_mapped_entitlements")
    assert entitlements > 0
    verdict = freshness_verdict(url, ["core", "role_mapped_entitlements"])
    assert verdict == "HEALTHY", f"freshness verdict {verdict}; dagster dev said:\n{daemon_log(home)}"
    page.goto(f"{url}/assets/core/role_mapped_entitlements")  # loaded after the verdict: the page shows it at once
    expect(status_of(page, "Row count")).to_contain_text(f"{entitlements:,}")
    expect(status_of(page, "Freshness policy")).to_contain_text("Passing")
    expect(page.get_by_text("granted_via", exact=True)).to_be_visible()  # the column schema
    shoot(page, "entitlements-asset")

    page.get_by_text("Checks", exact=True).first.click()  # the tab
    for check in ("matches_contract", "entitlements_of_active_members"):
        expect(page.get_by_text(check, exact=True).filter(visible=True).first).to_be_visible()
    outcomes = page.get_by_text(re.compile(r"^(Succeeded|Failed)$"))
    expect(outcomes.first).to_be_visible()
    assert set(outcomes.all_inner_texts()) == {"Succeeded"} and outcomes.count() >= 2
    expect(page.get_by_text("Passed", exact=True).first).to_be_visible()
    shoot(page, "entitlements-checks")

    # 5. The sync report on the publish step: API work, duration, counts and change events of this sync.
    page.goto(f"{url}/assets/published_directory")
    metadata_filter = page.get_by_placeholder("Filter metadata keys")
    metadata_filter.fill("sync.")
    for key in ("sync.api_requests", "sync.api_pages", "sync.api_retries", "sync.rate_limit_wait_worker_seconds",
                "sync.duration_seconds", "sync.users", "sync.groups", "sync.memberships"):
        expect(metadata_row(page, key)).to_be_visible()
    expect(metadata_row(page, "sync.entitlements")).to_contain_text(f"{entitlements}")
    page.get_by_text("Metadata", exact=True).first.evaluate("element => element.scrollIntoView({block: 'start'})")
    shoot(page, "sync-report")

    # 6. Back to the graph, now materialized, with room to see it.
    page.get_by_role("button", name="Hide navigation").click()
    page.goto(f"{url}/asset-groups/directory")
    expect(page.locator("[role=img][aria-label=run_success]").first).to_be_visible()  # statuses loaded
    shoot(page, "asset-graph")


def wait_for_first_sync(url: str, connection_id: str) -> None:
    """Until the run the connections sensor launched for a newly registered connection has succeeded."""
    query = """query($tags: [ExecutionTag!]) { runsOrError(filter: {tags: $tags}) { ... on Runs { results { status } } } }"""
    tags = [{"key": "dagster/partition", "value": connection_id}, {"key": "dirsync/trigger", "value": "added"}]
    deadline = time.monotonic() + RUN_TIMEOUT_MS / 1000
    while [r["status"] for r in graphql(url, query, {"tags": tags})["runsOrError"]["results"]] != ["SUCCESS"]:
        if time.monotonic() > deadline:
            pytest.fail(f"the sensor's first sync of {connection_id} did not succeed")
        time.sleep(1)


def published_count(database: Path, table: str) -> int:
    """Rows of a published table; waits out a sync the hourly schedule may have started meanwhile (one writer)."""
    deadline = time.monotonic() + 60
    while True:
        try:
            with reader.connect(database) as conn:
                return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
        except duckdb.IOException:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


def freshness_verdict(url: str, asset_key: list[str]) -> str:
    """The freshness daemon's verdict once it has given one (its first pass can take a while on 2 busy cores)."""
    query = ("query($key: AssetKeyInput!) { assetNodeOrError(assetKey: $key) {"
             " ... on AssetNode { freshnessStatusInfo { freshnessStatus } } } }")
    deadline = time.monotonic() + FRESHNESS_TIMEOUT_S
    while True:
        node = graphql(url, query, {"key": {"path": asset_key}})["assetNodeOrError"]
        verdict = node["freshnessStatusInfo"]["freshnessStatus"]
        if verdict != "UNKNOWN" or time.monotonic() > deadline:
            return verdict
        time.sleep(1)


def daemon_log(home: Path) -> str:
    """The daemon's lines of the `dagster dev` log, to tell a slow daemon from a failing one."""
    lines = (home / "dagster.log").read_text().splitlines()
    return "\n".join([line for line in lines if "daemon" in line.lower() or "error" in line.lower()][-40:])


def status_of(page, label: str):
    """The value shown under ``label`` in the Status section of an asset page."""
    return page.get_by_text(label, exact=True).first.locator("xpath=..")


def metadata_row(page, key: str):
    """The row of the asset page's metadata table for ``key``."""
    return page.get_by_role("row").filter(has=page.get_by_text(key, exact=True))
