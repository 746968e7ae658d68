"""The pages people look at, in a real browser: Debian's Chromium driven by Playwright
(pytest-playwright), against ``bin/serve`` with the production settings.

Playwright's own browser download cannot work here, so its launch is pointed at
``chromium`` from the machine (``apt-get install chromium``; ``.ci/run`` installs it). A
machine without it skips these tests and says so; with ``CI_REQUIRE_CHROMIUM=1`` that is a
failure instead. A failing test leaves a screenshot of its page under
``test-results/`` (``--screenshot=only-on-failure`` in pytest.ini)."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, Playwright, expect, sync_playwright

from apps.endpoints.models import ABTest, MLAlgorithm, MLRequest
from apps.endpoints.tests.factories import algorithm
from apps.ml.registry import MLRegistry
from apps.ml.tests.factories import SAMPLE_RECORD
from apps.ops.tests.live_server import Server, production_superuser, serving

PASSWORD = "a-browser-test-password"


def chromium_or_skip() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if os.environ.get("CI_REQUIRE_CHROMIUM"):
        pytest.fail("chromium is not installed, and CI_REQUIRE_CHROMIUM is set")
    pytest.skip("chromium is not installed: apt-get install chromium (Playwright drives it)")


# pytest-playwright keeps Playwright (and its event loop, on the test thread) for the whole
# session; Django then refuses the ORM of every later test as async code. Here they live
# for this module: started after the test database exists, stopped when the module ends.
@pytest.fixture(scope="module")
def playwright(django_db_setup: None) -> Iterator[Playwright]:
    with sync_playwright() as started:
        yield started


@pytest.fixture(scope="module")
def browser(playwright: Playwright, browser_type_launch_args: dict[str, Any]) -> Iterator[Browser]:
    launched = playwright.chromium.launch(**browser_type_launch_args)
    yield launched
    launched.close()


@pytest.fixture(scope="module")
def browser_context_args() -> dict[str, Any]:
    return {}


@pytest.fixture(autouse=True, scope="module")
def orm_beside_the_browser() -> Iterator[None]:
    """The tests' own queries (setting rows up, checking them, emptying the database after
    each) run beside Playwright's loop: not async code, so Django's refusal is lifted for
    this module, and only it (the servers it starts do not inherit it: live_server.serving
    drops it). Module-wide, so that it outlasts each test's database teardown."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        yield


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict[str, Any]) -> dict[str, Any]:
    return {**browser_type_launch_args, "executable_path": chromium_or_skip()}


@pytest.fixture
def site(registry: MLRegistry, artifacts_dir: Path, tmp_path: Path) -> Iterator[Server]:
    """The demo's two income models and an operator, served by gunicorn over plain HTTP
    (so the session cookie is not marked Secure)."""

    chromium_or_skip()  # before anything starts: a skip should cost nothing
    algorithm(registry, name="random forest", status="production")
    algorithm(registry, name="extra trees", status="testing", artifact="extra_trees.joblib")
    production_superuser("operator", PASSWORD)
    with serving(artifacts_dir, tmp_path, SECURE_COOKIES="0") as server:
        yield server


def log_in(page: Page, site: Server) -> None:
    page.goto(site.base + "/admin/login/")
    page.fill("#id_username", "operator")
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    expect(page.locator("#site-name")).to_be_visible()
    expect(page).to_have_url(site.base + "/admin/")


@pytest.mark.django_db(transaction=True)
def test_an_operator_logs_in_and_promotes_a_version_with_the_admin_action(
    site: Server, page: Page
) -> None:
    log_in(page, site)
    page.goto(site.base + "/admin/endpoints/mlalgorithm/")
    row = page.locator("#result_list tbody tr", has_text="extra trees")
    expect(row).to_contain_text("testing")
    row.locator("input[name=_selected_action]").check()
    page.select_option("select[name=action]", "promote_to_production")
    page.click("button[name=index]")
    expect(page.locator("ul.messagelist")).to_be_visible()
    expect(page.locator("#result_list tbody tr", has_text="extra trees")).to_contain_text(
        "production"
    )
    promoted = MLAlgorithm.objects.get(name="extra trees")
    assert promoted.statuses.get(active=True).status == "production"


@pytest.mark.django_db(transaction=True)
def test_the_report_shows_both_arms_with_their_intervals_and_nothing_is_clipped(
    site: Server, page: Page
) -> None:
    forest = MLAlgorithm.objects.get(name="random forest")
    trees = MLAlgorithm.objects.get(name="extra trees")
    test = ABTest.objects.create(
        title="forest vs trees", created_by="operator",
        parent_mlalgorithm_1=forest, parent_mlalgorithm_2=trees,
    )  # fmt: skip
    rows = []
    for arm, right in ((forest, 85), (trees, 70)):  # accuracies of 85% and 70%
        for i in range(100):
            answer = ">50K" if i % 2 else "<=50K"
            truth = answer if i < right else ("<=50K" if answer == ">50K" else ">50K")
            rows.append(
                MLRequest(
                    input_data={},
                    full_response={},
                    response=answer,
                    feedback=truth,
                    parent_mlalgorithm=arm,
                    ab_test=test,
                )
            )
    MLRequest.objects.bulk_create(rows)
    log_in(page, site)
    page.goto(f"{site.base}/abtests/{test.pk}/report")
    arms = page.locator("svg g.arm")
    expect(arms).to_have_count(2)
    for i in range(2):  # each arm: its interval (a line and two ends) and its point
        expect(arms.nth(i).locator("line")).to_have_count(3)
        expect(arms.nth(i).locator("circle")).to_have_count(1)
    clipped = page.evaluate(
        """() => {
            const svg = document.querySelector("svg");
            const width = svg.width.baseVal.value, height = svg.height.baseVal.value;
            return [...svg.querySelectorAll("text")]
                .map((t) => [t.textContent, t.getBBox()])
                .filter(([, b]) => b.x < 0 || b.y < 0 || b.x + b.width > width
                                   || b.y + b.height > height)
                .map(([text, b]) => `${text}: x ${b.x}-${b.x + b.width} of ${width}`);
        }"""
    )
    assert clipped == []


@pytest.mark.django_db(transaction=True)
def test_swagger_ui_loads_the_schema_and_try_it_out_predicts(site: Server, page: Page) -> None:
    page.goto(site.base + "/api/v1/docs")
    operation = page.locator(".opblock-post", has_text="/api/v1/{endpoint_name}/predict")
    expect(operation.first).to_be_visible(timeout=20_000)  # the schema loaded and rendered
    operation.first.locator(".opblock-summary").click()
    operation.first.get_by_role("button", name="Try it out").click()
    operation.first.locator("input[placeholder=endpoint_name]").fill("income_classifier")
    # The body starts as the schema's example record where the model card has one (the
    # demo models do); these tests' models were registered without one.
    operation.first.locator("textarea.body-param__text").fill(json.dumps(SAMPLE_RECORD))
    operation.first.get_by_role("button", name="Execute").click()
    status = operation.first.locator(".live-responses-table tbody .response-col_status").first
    expect(status).to_have_text("200", timeout=20_000)
    assert MLRequest.objects.count() == 1  # the prediction was made and logged


def test_a_failing_browser_test_leaves_a_screenshot_of_its_page(tmp_path: Path) -> None:
    # What pytest.ini's --screenshot=only-on-failure --output=test-results give: a failing
    # test's page, where its output says, to see what it saw.
    import subprocess
    import sys
    import textwrap

    chromium = chromium_or_skip()
    (tmp_path / "test_fails.py").write_text(
        textwrap.dedent(
            f"""
            import pytest

            @pytest.fixture(scope="session")
            def browser_type_launch_args(browser_type_launch_args):
                return {{**browser_type_launch_args, "executable_path": {chromium!r}}}

            def test_fails(page):
                page.set_content("<h1>what the test saw</h1>")
                assert page.title() == "a page that is not there"
            """
        )
    )
    ini = Path(__file__).resolve().parents[5] / "pytest.ini"
    done = subprocess.run(
        [
            *(sys.executable, "-m", "pytest", "-c", str(ini), "--rootdir", str(tmp_path)),
            *("-p", "no:django", "-W", "ignore::pytest.PytestConfigWarning", "test_fails.py"),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    shots = list((tmp_path / "test-results").rglob("*.png"))
    assert len(shots) == 1 and shots[0].stat().st_size > 1000, done.stdout


@pytest.mark.django_db(transaction=True)
def test_an_operator_adds_a_model_with_the_admins_upload_form(
    site: Server, page: Page, tmp_path: Path
) -> None:
    from apps.ml.tests import models

    wine = models.save(models.wine_classifier(), tmp_path / "upload", "wine.skops")
    log_in(page, site)
    page.goto(site.base + "/admin/endpoints/mlalgorithm/add/")
    page.set_input_files("input[name=artifact_file]", str(wine))
    page.fill("input[name=endpoint_name]", "wine")
    page.fill("input[name=model_name]", "logistic regression")
    page.fill("input[name=model_version]", "1.0.0")
    page.select_option("select[name=status]", "production")
    page.click("input[name=_save]")
    expect(page.locator("ul.messagelist")).to_be_visible()
    expect(page.locator("#result_list tbody tr", has_text="logistic regression")).to_contain_text(
        "production"
    )
    x, _ = models.wine()
    status, _, answer = site.call("POST", "/api/v1/wine/predict", x.iloc[0].to_dict())
    assert status == 200, answer  # the uploaded model serves


@pytest.mark.django_db(transaction=True)
def test_an_ab_test_made_in_the_browsable_api_is_stopped_from_the_admin(
    site: Server, page: Page
) -> None:
    from adult import load_split

    log_in(page, site)  # the same session signs in to the browsable API
    page.goto(site.base + "/api/v1/abtests")
    form = page.locator("#post-object-form form")
    form.locator("input[name=title]").fill("forest vs trees, from the browser")
    forest, trees = (MLAlgorithm.objects.get(name=n).pk for n in ("random forest", "extra trees"))
    form.locator("select[name=parent_mlalgorithm_1]").select_option(value=str(forest))
    form.locator("select[name=parent_mlalgorithm_2]").select_option(value=str(trees))
    form.locator("button", has_text="POST").click()
    expect(page.locator(".response-info")).to_contain_text("201 Created")
    test = ABTest.objects.get()
    assert test.state == ABTest.State.RUNNING

    # Traffic and its true labels, as clients send them.
    frame = load_split("adult.test").head(60)
    for i, (record, truth) in enumerate(
        zip(frame.drop(columns="income").to_dict("records"), frame["income"], strict=True)
    ):
        record = {k: v for k, v in record.items() if v == v}  # a missing value is left out
        headers = {"X-Assignment-Key": f"client-{i}"}
        status, _, body = site.call(
            "POST", "/api/v1/income_classifier/predict?status=ab_testing", record, headers
        )
        assert status == 200, body
        answer = json.loads(body)
        feedback = {"feedback": truth, "feedback_token": answer["feedback_token"]}
        status, _, body = site.call("PUT", f"/api/v1/mlrequests/{answer['request_id']}", feedback)
        assert status == 200, body
    assert set(MLRequest.objects.values_list("parent_mlalgorithm__name", flat=True)) == {
        "random forest",
        "extra trees",
    }

    page.goto(site.base + "/admin/endpoints/abtest/")
    page.locator("#result_list tbody tr", has_text="from the browser").locator(
        "input[name=_selected_action]"
    ).check()
    page.select_option("select[name=action]", "stop_tests")
    page.click("button[name=index]")
    expect(page.locator("ul.messagelist")).to_be_visible()
    test.refresh_from_db()
    assert test.state == ABTest.State.STOPPED and test.summary
