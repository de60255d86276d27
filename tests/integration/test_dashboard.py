"""The dashboard in-process, over aiohttp's test server: pages and JSON API, escaping of every
outside value, security headers, the token and cross-site rules of actions, downloads, the
throughput chart and the daemon's samples. The browser tests are in tests/e2e/."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bulktag.app.steering import ControlError, control_job
from bulktag.arn import Shard
from bulktag.config import Settings
from bulktag.store import ItemState, JobOptions, JobState, NewItem, NewSyncRule, Outcome, Store
from bulktag.web.dashboard import Dashboard, sample_jobs
from bulktag.web.dashboard.chart import build_chart, throughput

TOKEN = "test-token-0123456789"
MARKUP = "<img src=x onerror=alert(1)>"
EAST = Shard("aws", "123456789012", "us-east-1")
WEST = Shard("aws", "123456789012", "us-west-2")
OWNER = "dash-host:4242:abcd"


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    async with await Store.open(str(tmp_path / "state" / "bulktag.db")) as s:
        yield s


async def seeded_job(store: Store, *, name: str = "<script>alert('name')</script>") -> int:
    """An active job of 40 items over two shards: 10 succeeded, 4 failed with markup in their
    message and a tag value with markup, the rest pending."""
    body = json.dumps({"Owner": "<b>team</b>"}, separators=(",", ":"))
    job = await store.create_job("tag", options=JobOptions(tags={"Owner": "<b>team</b>"}),
                                 name=name)
    await store.add_items(job, [
        NewItem(f"arn:aws:ec2:{shard.region}:123456789012:instance/i-{i:04d}<x>", shard, body)
        for shard in (EAST, WEST) for i in range(20)])
    await store.set_job_state(job, JobState.ACTIVE)
    await store.register_owner(OWNER)
    shard_id = (await store.runnable())[0].shard_id
    claimed = await store.claim(OWNER, job, shard_id, 14, lease_seconds=60)
    await store.record(OWNER, [
        Outcome(c.id, ItemState.FAILED, 1, error_code="TagPolicyViolation", http_status=400,
                message=f"refused {MARKUP}") for c in claimed[:4]] + [
        Outcome(c.id, ItemState.SUCCEEDED, 1) for c in claimed[4:]])
    for k in range(4):
        await store.record_sample(job, 1000.0 + 10 * k, 3 * k)
    return job


def client_for(store: Store, token: str | None = TOKEN,
               throttles: dict[tuple[Shard, str], int] | None = None) -> TestClient[web.Request, web.Application]:
    app = web.Application()
    Dashboard(store, Settings(db=store.path, ui_token=token),
              throttles=(lambda: throttles) if throttles is not None else None).register(app)
    return TestClient(TestServer(app))


# -- pages: escaping and headers ----------------------------------------------------------------


async def test_pages_escape_every_outside_value_and_send_security_headers(store: Store) -> None:
    job = await seeded_job(store)
    await store.add_sync_rule(NewSyncRule("<i>rule</i>", "env", "<prod>", None,
                                          {"k": "<v>"}, ["us-east-1"], [""], 300))
    async with client_for(store) as client:
        for path in ("/", f"/jobs/{job}"):
            resp = await client.get(path)
            assert resp.status == 200
            html = await resp.text()
            csp = resp.headers["Content-Security-Policy"]
            nonce = re.search(r"'nonce-([^']+)'", csp)
            assert nonce is not None
            # The only scripts and styles are the page's own, carrying this response's nonce.
            assert re.findall(r"<script[^>]*>", html) == [f'<script nonce="{nonce[1]}">']
            assert re.findall(r"<style[^>]*>", html) == [f'<style nonce="{nonce[1]}">']
            assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
            assert "unsafe-inline" not in csp
            assert resp.headers["X-Content-Type-Options"] == "nosniff"
            assert resp.headers["X-Frame-Options"] == "DENY"
            assert "<img" not in html and "<b>team" not in html and "<i>rule" not in html
            assert "<script>alert" not in html
        assert "&lt;script&gt;alert(&#39;name&#39;)&lt;/script&gt;" in html
        assert f"refused {MARKUP}".replace("<", "&lt;").replace(">", "&gt;") in html
        assert "&lt;b&gt;team&lt;/b&gt;" in html  # the tag value
        assert "instance/i-0000&lt;x&gt;" in html  # an ARN
        index = await (await client.get("/")).text()
        assert "&lt;i&gt;rule&lt;/i&gt;" in index and "env=&lt;prod&gt;" in index
        # A fresh nonce per response.
        first = (await client.get("/")).headers["Content-Security-Policy"]
        assert first != (await client.get("/")).headers["Content-Security-Policy"]
        api = await client.get("/api/jobs")
        assert api.headers["X-Frame-Options"] == "DENY"
        assert "script-src 'none'" in api.headers["Content-Security-Policy"]


async def test_job_page_has_chart_shard_table_errors_and_last_failures(store: Store) -> None:
    job = await seeded_job(store)
    async with client_for(store, throttles={(EAST, "tagging-api"): 7}) as client:
        html = await (await client.get(f"/jobs/{job}")).text()
        assert '<svg xmlns="http://www.w3.org/2000/svg" class="chart"' in html
        assert '<polyline class="line"' in html
        assert html.count("<tr>") >= 2 + 1 + 4  # shard rows, an error row, 4 failures
        detail = await (await client.get(f"/api/jobs/{job}")).json()
        assert detail["state"] == "active" and detail["total"] == 40
        assert detail["counts"]["succeeded"] == 10 and detail["failures"] == 4
        assert [p["name"] for p in detail["progress"]] == [
            "succeeded", "skipped", "failed", "cancelled", "open"]
        assert sum(p["width"] for p in detail["progress"]) == pytest.approx(100)
        shards = {(s["account"], s["region"]): s for s in detail["shards"]}
        assert shards[("123456789012", "us-east-1")]["throttles"] == 7
        assert shards[("123456789012", "us-west-2")]["throttles"] == 0
        assert sum(s["open"] for s in detail["shards"]) == 26
        assert detail["throughput"] == [{"at": 1010.0, "rate": 0.3}, {"at": 1020.0, "rate": 0.3},
                                        {"at": 1030.0, "rate": 0.3}]
        error = detail["top_errors"][0]
        assert error["code"] == "TagPolicyViolation" and error["count"] == 4
        assert error["example_message"] == f"refused {MARKUP}" and error["advice"]
        assert len(detail["last_failures"]) == 4
        assert detail["last_failures"][0]["message"] == f"refused {MARKUP}"
        svg = await client.get(f"/jobs/{job}/chart.svg")
        assert svg.content_type == "image/svg+xml"
        assert "<polyline" in await svg.text()
        assert (await client.get("/jobs/999")).status == 404
        assert (await client.get("/api/jobs/999")).status == 404


async def test_api_lists_jobs_workers_and_sync_rules(store: Store) -> None:
    job = await seeded_job(store, name="plain")
    await store.add_sync_rule(NewSyncRule("r1", "env", "prod", None, {"k": "v"},
                                          ["us-east-1"], [""], 300))
    await store.acquire_shards(OWNER, [1], lease_seconds=60)
    async with client_for(store, token=None) as client:
        jobs = await (await client.get("/api/jobs")).json()
        assert jobs["actions_enabled"] is False
        assert [(j["job"], j["name"], j["operation"], j["state"]) for j in jobs["jobs"]] == [
            (job, "plain", "tag", "active")]
        assert {"rate", "eta_seconds", "failures", "progress"} <= set(jobs["jobs"][0])
        workers = (await (await client.get("/api/workers")).json())["workers"]
        assert [(w["owner"], w["pid"], w["alive"], w["shards"]) for w in workers] == [
            (OWNER, 4242, True, 1)]
        rules = (await (await client.get("/api/sync-rules")).json())["sync_rules"]
        assert [(r["name"], r["status"]) for r in rules] == [("r1", "ACTIVE")]


# -- actions -------------------------------------------------------------------------------------


async def test_actions_are_refused_without_a_configured_token(store: Store) -> None:
    job = await seeded_job(store)
    async with client_for(store, token=None) as client:
        for headers in ({}, {"Authorization": f"Bearer {TOKEN}"}):
            resp = await client.post(f"/api/jobs/{job}/pause", headers=headers)
            assert resp.status == 403
            assert "read-only" in (await resp.json())["error"]
        page = await (await client.get(f"/jobs/{job}")).text()
        assert 'id="read-only"' in page and 'data-actions="off"' in page
    assert (await store.get_job(job)).state == "active"  # type: ignore[union-attr]


async def test_actions_need_the_token_and_the_same_origin(store: Store) -> None:
    job = await seeded_job(store)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with client_for(store) as client:
        origin = f"http://{client.host}:{client.port}"
        refused = [
            ({}, 401, "needs the dashboard token"),
            ({"Authorization": "Bearer wrong-token-0000000"}, 401, "wrong dashboard token"),
            ({"Authorization": TOKEN}, 401, "needs the dashboard token"),
            ({**auth, "Origin": "http://evil.example"}, 403, "cross-site"),
            ({**auth, "Sec-Fetch-Site": "cross-site"}, 403, "cross-site"),
            ({**auth, "Sec-Fetch-Site": "same-site"}, 403, "cross-site"),
        ]
        for headers, status, text in refused:
            resp = await client.post(f"/api/jobs/{job}/pause", headers=headers)
            assert resp.status == status, headers
            assert text in (await resp.json())["error"]
        assert (await store.get_job(job)).state == "active"  # type: ignore[union-attr]
        # A GET cannot act.
        assert (await client.get(f"/api/jobs/{job}/pause")).status == 405

        same = {**auth, "Origin": origin, "Sec-Fetch-Site": "same-origin"}
        resp = await client.post(f"/api/jobs/{job}/pause", headers=same)
        assert resp.status == 200
        assert (await resp.json()) == {"job": job, "action": "pause", "state": "paused",
                                       "message": f"job {job} paused"}
        again = await client.post(f"/api/jobs/{job}/pause", headers=same)
        assert again.status == 409 and "only ready or active jobs pause" in (
            await again.json())["error"]
        resp = await client.post(f"/api/jobs/{job}/resume", headers=same)
        assert (await resp.json())["state"] == "ready"
        resp = await client.post(f"/api/jobs/{job}/priority", headers=same, json={"priority": 7})
        assert (await resp.json())["priority"] == 7 and (await resp.json())["was"] == 0
        bad = await client.post(f"/api/jobs/{job}/priority", headers=same, json={"priority": "x"})
        assert bad.status == 400
        resp = await client.post(f"/api/jobs/{job}/retry", headers=same)
        assert (await resp.json())["requeued"] == 4
        resp = await client.post(f"/api/jobs/{job}/cancel", headers=same)
        assert (await resp.json())["cancelled"] == 30 and (await resp.json())["state"] == "cancelled"
        # an action that does not exist is not found (an action refused now is 409)
        assert (await client.post(f"/api/jobs/{job}/frobnicate", headers=same)).status == 404
        assert (await client.post(f"/api/jobs/{job}/delete", headers=same)).status == 404
        assert (await client.post(f"/api/jobs/{job}/pause", headers=same)).status == 409
        assert (await client.post("/api/jobs/999/pause", headers=same)).status == 404
        huge = "9" * 30  # past 64 bits: no store holds it, so no such job (not a 500)
        assert (await client.post(f"/api/jobs/{huge}/pause", headers=same)).status == 404
        over = await client.post(f"/api/jobs/{job}/priority", headers=same,
                                 json={"priority": 10**30})
        assert over.status == 400 and "between" in (await over.json())["error"]
    job_now = await store.get_job(job)
    assert job_now is not None and job_now.priority == 7 and job_now.state == "cancelled"


async def test_control_job_says_why_an_action_does_not_apply(store: Store) -> None:
    job = await seeded_job(store)
    with pytest.raises(ControlError, match="not paused"):
        await control_job(store, job, "resume")
    with pytest.raises(ControlError, match="needs a whole number"):
        await control_job(store, job, "priority")
    await control_job(store, job, "cancel")
    with pytest.raises(ControlError, match="already cancelled"):
        await control_job(store, job, "cancel")
    with pytest.raises(ControlError, match="no job 999"):
        await control_job(store, 999, "pause")


# -- downloads -----------------------------------------------------------------------------------


async def test_downloads_stream_the_report_and_the_manifest(store: Store) -> None:
    job = await seeded_job(store)
    async with client_for(store) as client:
        resp = await client.get(f"/jobs/{job}/report.csv")
        assert resp.status == 200 and resp.content_type == "text/csv"
        assert f"job-{job}-report.csv" in resp.headers["Content-Disposition"]
        rows = list(csv.DictReader(io.StringIO(await resp.text())))
        assert len(rows) == 40 and {r["status"] for r in rows} == {"succeeded", "failed",
                                                                    "pending"}
        failed = await (await client.get(f"/jobs/{job}/report.csv?failed_only=1")).text()
        assert len(list(csv.DictReader(io.StringIO(failed)))) == 4
        lines = (await (await client.get(f"/jobs/{job}/report.jsonl")).text()).splitlines()
        assert len(lines) == 40 and json.loads(lines[0])["arn"].endswith("<x>")
        manifest = await (await client.get(f"/jobs/{job}/manifest.json")).json(
            content_type=None)
        assert manifest["job"] == job and manifest["counts"]["failed"] == 4
        assert manifest["errors"] == [{"code": "TagPolicyViolation", "count": 4}]
        assert manifest["tags"] == {"Owner": "<b>team</b>"}


async def test_buttons_are_disabled_where_the_action_does_not_apply(store: Store) -> None:
    job = await seeded_job(store)  # active, with failures
    async with client_for(store) as client:
        html = await (await client.get(f"/jobs/{job}")).text()
        assert re.search(r'data-action="pause">', html)  # enabled
        assert re.search(r'data-action="resume" disabled title="the job is active, not '
                         r'paused"', html)
        actions = (await (await client.get(f"/api/jobs/{job}")).json())["actions"]
        assert actions == {"pause": None, "resume": "the job is active, not paused",
                           "cancel": None, "retry": None, "priority": None}
    async with client_for(store, token=None) as client:  # a read-only page: none enabled
        html = await (await client.get(f"/jobs/{job}")).text()
        assert html.count("disabled title=\"read-only: actions need ui_token") == 5


async def test_unknown_jobs_and_bad_parameters_are_404_and_400_never_500(store: Store) -> None:
    job = await seeded_job(store)
    async with client_for(store) as client:
        page = await client.get("/jobs/999")  # a browser's page: HTML, no store path in it
        assert page.status == 404 and page.content_type == "text/html"
        text = await page.text()
        assert "No such job" in text and str(store.path) not in text
        assert page.headers["X-Content-Type-Options"] == "nosniff"
        for path in (f"/jobs/{'9' * 30}", f"/api/jobs/{'9' * 30}", "/api/jobs/999",
                     f"/jobs/{'9' * 30}/report.csv", f"/jobs/{'9' * 30}/chart.svg"):
            assert (await client.get(path)).status == 404, path
        bad = await client.get(f"/jobs/{job}/report.csv?failed_only=abc")
        assert bad.status == 400 and "failed_only" in (await bad.json())["error"]
        assert (await client.get(f"/jobs/{job}/report.csv?failed_only=no")).status == 200


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(path=st.one_of(
    st.integers(min_value=-10**30, max_value=10**30).map(lambda n: f"/jobs/{n}"),
    st.integers(min_value=0, max_value=10**30).map(lambda n: f"/api/jobs/{n}"),
    st.text(alphabet="0123456789abc%/.-_", max_size=25).map(lambda t: f"/jobs/{t}"),
    st.text(alphabet="0123456789abc=&;%", max_size=20).map(
        lambda q: f"/jobs/1/report.csv?failed_only={q}"),
), body=st.one_of(st.none(), st.integers(), st.text(max_size=10),
                  st.dictionaries(st.sampled_from(["priority", "code", "x"]),
                                  st.one_of(st.integers(min_value=-10**30, max_value=10**30),
                                            st.text(max_size=5), st.booleans(), st.none(),
                                            st.floats(allow_nan=True)), max_size=3)),
       action=st.sampled_from(["pause", "resume", "cancel", "retry", "priority", "delete",
                               "x"]),
       job=st.integers(min_value=0, max_value=10**25))
def test_no_route_or_body_makes_the_dashboard_fail(tmp_path_factory: pytest.TempPathFactory,
                                                   path: str, body: object, action: str,
                                                   job: int) -> None:
    """Fuzz: whatever the path, query or JSON body, the answer is a page, a 4xx or a 200 —
    never a 500 (a bug's traceback)."""
    async def check() -> None:
        db = tmp_path_factory.mktemp("fuzz") / "bulktag.db"
        async with await Store.open(str(db)) as store:
            await seeded_job(store)
            async with client_for(store) as client:
                got = await client.get(path)
                assert got.status < 500, (path, got.status, await got.text())
                same = {"Authorization": f"Bearer {TOKEN}",
                        "Origin": f"http://{client.host}:{client.port}",
                        "Sec-Fetch-Site": "same-origin"}
                posted = await client.post(f"/api/jobs/{job}/{action}", headers=same,
                                           data=json.dumps(body))
                assert posted.status < 500, (job, action, body, posted.status,
                                             await posted.text())

    asyncio.run(check())


# -- chart and samples ---------------------------------------------------------------------------


def test_throughput_per_sample_then_per_minute_and_bounded() -> None:
    assert throughput([]) == [] and throughput([(0.0, 0)]) == []
    assert throughput([(0.0, 0), (10.0, 50), (20.0, 150)]) == [(10.0, 5.0), (20.0, 10.0)]
    assert throughput([(0.0, 100), (10.0, 40)]) == [(10.0, 0.0)]  # a retry lowered the total
    hour = [(10.0 * i, 1000 * i) for i in range(361)]  # an hour at 100/s, a sample every 10 s
    points = throughput(hour)
    assert len(points) == 60 and all(rate == pytest.approx(100.0) for _, rate in points)
    day = [(10.0 * i, 10 * i) for i in range(8641)]
    assert len(throughput(day)) <= 360
    chart = build_chart(points)
    assert chart.points.count(",") == 60 and chart.peak == pytest.approx(100.0)
    assert chart.y_ticks[-1][1] == "200" or chart.y_ticks[-1][1] == "250"
    empty = build_chart([])
    assert empty.points == "" and empty.latest is None


def test_early_in_a_job_the_chart_is_a_line_under_two_distinct_times() -> None:
    """Newcomer finding 21.7: with two samples the chart was one dot under the same time
    written twice. The first point's interval starts at the first sample: a line over it."""
    samples = [(1_000_000.0, 0), (1_000_010.0, 500)]
    chart = build_chart(throughput(samples), since=samples[0][0])
    assert len(chart.points.split()) == 2 and len(chart.markers) == 1
    texts = [label for _, _, label in chart.x_labels]
    assert len(texts) == len(set(texts)) == 2, texts  # HH:MM:SS ten seconds apart
    alone = build_chart(throughput(samples))  # no start known: one time, shown once
    assert [label for _, _, label in alone.x_labels] == [texts[-1]]
    many = [(1_000_000.0 + 10 * i, 100 * i) for i in range(30)]
    labels = [label for _, _, label in build_chart(throughput(many),
                                                   since=many[0][0]).x_labels]
    assert len(labels) == len(set(labels)) == 3


async def test_sample_jobs_samples_live_jobs_and_the_end_of_a_finished_one(store: Store) -> None:
    job = await seeded_job(store)
    done = await store.create_job("tag", options=JobOptions(tags={"k": "v"}))
    await store.set_job_state(done, JobState.COMPLETED)
    live = await sample_jobs(store, set(), now=2000.0)
    assert live == {job}
    assert (await store.samples(job, 2000.0)) == [(2000.0, 14)]
    assert await store.samples(done) == []
    await store.set_job_state(job, JobState.CANCELLED)
    assert await sample_jobs(store, live, now=2010.0) == set()
    assert (await store.samples(job, 2000.0)) == [(2000.0, 14), (2010.0, 14)]
    assert await sample_jobs(store, set(), now=2020.0) == set()
    assert len(await store.samples(job, 2000.0)) == 2  # no more samples of an ended job
