#!/usr/bin/python3
"""End-to-end tests of `taskq web` in Debian's headless chromium (selenium).

Run by test/web/test_web.sh against the suite's cluster (PG* environment):
creates jobs in every state, a dependency graph, an unprivileged role and
200,000 finished jobs for the plan check, starts two dashboards (the
superuser's and the unprivileged role's) and prints one "web NAME ... ok" or
"web NAME ... FAILED" line per check.  Every wait polls a condition with a
deadline.  Screenshots go to $TASKQ_WEB_ARTIFACTS.
"""
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

import psycopg
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

TASKQ = os.environ.get("TASKQ_BIN", "cli/taskq")
ART = os.environ.get("TASKQ_WEB_ARTIFACTS", "/tmp")
TAG = "web_%d" % os.getpid()
USER, PW = TAG + "_user", TAG + "_pw"
failures = 0
procs = []


def report(name, ok, why=""):
    global failures
    if ok:
        print("web %s ... ok" % name, flush=True)
    else:
        failures += 1
        print("web %s ... FAILED %s" % (name, why), flush=True)


def check(name, fn):
    try:
        r = fn()
        report(name, r is None or r is True, "" if r in (None, True) else str(r))
    except Exception as e:  # a failed check must not stop the others
        report(name, False, "%s: %s" % (type(e).__name__, e))


def wait_for(cond, timeout=10.0, what="condition"):
    deadline = time.monotonic() + timeout
    while True:
        try:
            v = cond()
        except Exception:
            v = None
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for " + what)
        time.sleep(0.05)


db = psycopg.connect("", autocommit=True)


def q(sql, *args):
    cur = db.execute(sql, args)
    return cur.fetchall() if cur.description else None


def one(sql, *args):
    return q(sql, *args)[0][0]


def status(job):
    return one("SELECT status::text FROM taskq.jobs WHERE id = %s", job)


# ---------------------------------------------------------------- the data
def setup():
    ids = {}
    # 200,000 finished jobs, older than the hour the charts show, so the
    # plan check runs on a table where a sequential scan would be tempting
    q("""INSERT INTO taskq.jobs (queue, job_type, priority, effective_priority, status, payload,
             last_error, attempts, max_attempts, backoff, cpu_units, memory_mb, run_at, owner,
             created_at, started_at, finished_at)
         SELECT %s, 'bulk_' || (i %% 7), 'normal', 'normal',
                CASE WHEN i %% 10 = 0 THEN 'failed' ELSE 'succeeded' END::taskq.job_status,
                jsonb_build_object('n', i), CASE WHEN i %% 10 = 0 THEN 'bulk error' END,
                1, 1, '1 second', 1, 0, t, current_user::regrole, t, t, t + interval '1 second'
         FROM generate_series(1, 200000) i,
              LATERAL (SELECT now() - interval '3 days' + i * interval '1 second' AS t) x""",
      TAG + "_bulk")
    q("ANALYZE taskq.jobs")
    q("CREATE FUNCTION public.%s_ok(payload jsonb) RETURNS jsonb LANGUAGE sql "
      "AS $$ SELECT jsonb_build_object('done', true) $$" % TAG)
    q("SELECT taskq.register_handler(%s, %s::regprocedure)", TAG + "_ok", "public.%s_ok(jsonb)" % TAG)
    qq = TAG + "_q"
    ids["succeeded"] = one("SELECT taskq.submit(%s, '{\"k\": \"alpha\"}', queue => %s)", TAG + "_ok", qq)
    ids["failed"] = one("SELECT taskq.submit(%s, '{\"k\": \"beta\"}', queue => %s, max_attempts => 1)", TAG + "_ext", qq)
    got = one("SELECT id FROM taskq.claim(ARRAY[%s], 'w1', 1)", qq)
    assert got == ids["failed"], (got, ids)
    q("SELECT taskq.fail(%s, %s, false)", ids["failed"], "boom " + TAG)
    ids["running"] = one("SELECT taskq.submit(%s, '{\"k\": \"gamma\"}', queue => %s)", TAG + "_ext", qq)
    got = one("SELECT id FROM taskq.claim(ARRAY[%s], %s, 1)", qq, TAG + "_worker")
    assert got == ids["running"], (got, ids)
    ids["pending"] = one("SELECT taskq.submit(%s, '{\"k\": \"delta\"}', queue => %s)", TAG + "_ext", qq)
    ids["blocked"] = one("SELECT taskq.submit(%s, '{\"k\": \"eps\"}', queue => %s, depends_on => ARRAY[%s]::bigint[])",
                         TAG + "_ext", qq, ids["pending"])
    ids["cancelled"] = one("SELECT taskq.submit(%s, '{\"k\": \"zeta\"}', queue => %s)", TAG + "_ext", qq)
    q("SELECT taskq.cancel(%s)", ids["cancelled"])
    # a graph: a (runs) -> b, c (wait for a worker) -> d -> e
    dq = TAG + "_dag"
    a = one("SELECT taskq.submit(%s, '{}', queue => %s)", TAG + "_ok", dq)
    b = one("SELECT taskq.submit(%s, '{}', queue => %s, depends_on => ARRAY[%s]::bigint[])", TAG + "_ext", dq, a)
    c = one("SELECT taskq.submit(%s, '{}', queue => %s, depends_on => ARRAY[%s]::bigint[])", TAG + "_ext", dq, a)
    d = one("SELECT taskq.submit(%s, '{}', queue => %s, depends_on => ARRAY[%s, %s]::bigint[])", TAG + "_ext", dq, b, c)
    e = one("SELECT taskq.submit(%s, '{}', queue => %s, depends_on => ARRAY[%s]::bigint[])", TAG + "_ext", dq, d)
    ids["dag"] = [a, b, c, d, e]
    assert one("SELECT taskq.wait(ARRAY[%s, %s]::bigint[], '60 s')", ids["succeeded"], a)
    wait_for(lambda: status(b) == "pending", what="b released")
    q("CREATE ROLE %s LOGIN PASSWORD '%s'" % (USER, PW))
    q("GRANT taskq_user TO %s" % USER)
    with psycopg.connect("", user=USER, password=PW, autocommit=True) as uc:
        ids["mine"] = uc.execute("SELECT taskq.submit(%s, '{\"secret\": \"mine\"}', queue => %s)",
                                 (TAG + "_mine", TAG + "_uq")).fetchone()[0]
    return ids


def cleanup():
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
    q("DELETE FROM taskq.jobs WHERE left(queue, %s) = %s", len(TAG), TAG)
    q("DELETE FROM taskq.queues WHERE left(name, %s) = %s", len(TAG), TAG)
    try:
        q("SELECT taskq.unregister_handler(%s)", TAG + "_ok")
    except psycopg.Error:
        pass
    q("DROP FUNCTION IF EXISTS public.%s_ok(jsonb)" % TAG)
    q("DROP ROLE IF EXISTS %s" % USER)


def start_web(*args, env=None):
    p = subprocess.Popen([TASKQ, "web", "--listen", "127.0.0.1:0", *args], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})})
    procs.append(p)
    line = p.stdout.readline()
    m = re.search(r"http://[^ ]+/", line)
    if not m:
        raise AssertionError("taskq web did not start: %r %s" % (line, p.stderr.read()))
    return m.group(0)


# ---------------------------------------------------------------- HTTP helpers
def http(method, url, headers=None, data=None):
    req = urllib.request.Request(url, method=method, headers=headers or {}, data=data)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def token_of(base):
    return re.search(r'name="csrf-token" content="([0-9a-f]+)"', http("GET", base)[1]).group(1)


# ---------------------------------------------------------------- browser
def browser():
    opts = webdriver.ChromeOptions()
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1300",
              "--disable-gpu"):
        opts.add_argument(a)
    opts.binary_location = "/usr/bin/chromium"
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)


def console_errors(drv):
    return [e for e in drv.get_log("browser") if e["level"] == "SEVERE"]


def row_ids(drv):
    return {int(r.get_attribute("data-id")) for r in drv.find_elements(By.CSS_SELECTOR, "#jobs-table tbody tr")}


def main():
    ids = setup()
    qq = TAG + "_q"
    base = start_web()
    ubase = start_web(env={"PGUSER": USER, "PGPASSWORD": PW})
    drv = browser()
    errors = []
    try:
        # ---- plan of the page query: keyset on jobs_pkey, never a Seq Scan
        def plans():
            for f in ["", "queue=" + qq, "status=cancelled", "type=nosuch", "q=zzz", "before=100",
                      "status=failed&queue=%s_bulk" % TAG, "from=2020-01-01T00:00:00Z&to=2021-01-01T00:00:00Z",
                      "owner=nosuchrole"]:
                for env in ({}, {"PGUSER": USER, "PGPASSWORD": PW}):
                    out = subprocess.run([TASKQ, "web", "--explain", f], capture_output=True, text=True,
                                         env={**os.environ, **env}, check=True).stdout
                    if "Seq Scan" in out or not re.search(r"Index Scan Backward using jobs_pkey on jobs\b", out) \
                            or not re.search(r"Index Cond: \(\(id <", out):
                        return "plan for %r (%s): %s" % (f, env.get("PGUSER", "admin"), out)
        check("explain_no_seq_scan", plans)

        # ---- overview
        def overview():
            drv.get(base)
            wait_for(lambda: drv.find_element(By.CSS_SELECTOR, '#queues tr[data-queue="%s"]' % qq), what="queue row")
            row = drv.find_element(By.CSS_SELECTOR, '#queues tr[data-queue="%s"]' % qq).text
            # blocked 1, pending 1, running 1
            assert re.search(r"%s 1 1 1" % qq, row), row
            wait_for(lambda: drv.find_elements(By.CSS_SELECTOR, "#chart-throughput rect"), what="chart bars")
            assert drv.find_elements(By.CSS_SELECTOR, "#chart-failure polyline")
            assert "executor" in drv.find_element(By.ID, "executors").text
            assert TAG + "_worker" in drv.find_element(By.ID, "external").text
            assert "launcher" in drv.find_element(By.ID, "health").text
            wait_for(lambda: "live" == drv.find_element(By.ID, "live").text, what="live indicator")
            drv.save_screenshot(os.path.join(ART, "overview.png"))
            errors.extend(console_errors(drv))
        check("overview_renders", overview)

        # ---- filters
        def apply_filters(**f):
            drv.get(base + "jobs")
            wait_for(lambda: drv.find_element(By.ID, "f-apply"), what="filters")
            for k, v in f.items():
                el = drv.find_element(By.ID, "f-" + k)
                if el.tag_name == "select":
                    Select(el).select_by_value(v)
                else:
                    el.clear()
                    el.send_keys(v)
            drv.find_element(By.ID, "f-apply").click()
            wait_for(lambda: all(k + "=" in drv.current_url for k in f), what="url")

        def filters():
            cases = [
                (dict(queue=qq, status="failed"), {ids["failed"]}),
                (dict(queue=qq, status="blocked"), {ids["blocked"]}),
                (dict(queue=qq, type=TAG + "_ok"), {ids["succeeded"]}),
                (dict(queue=qq, q="boom " + TAG), {ids["failed"]}),
                (dict(queue=qq, q="gamma"), {ids["running"]}),
                (dict(queue=qq), {ids[k] for k in ("succeeded", "failed", "running", "pending", "blocked", "cancelled")}),
                (dict(owner=USER), {ids["mine"]}),
            ]
            for f, want in cases:
                apply_filters(**f)
                # the unfiltered page shows first: wait for the filtered one
                try:
                    wait_for(lambda: row_ids(drv) == want, timeout=5, what="rows for %r" % f)
                except AssertionError:
                    return "filter %r: got %s, want %s" % (f, sorted(row_ids(drv)), sorted(want))
            # the same page from the database, through the API
            st, body = http("GET", base + "api/jobs?queue=%s&status=failed" % qq)
            assert st == 200 and [j["id"] for j in json.loads(body)["jobs"]] == [ids["failed"]], body
            # the time range, on created_at
            six = sorted((ids[k] for k in ("succeeded", "failed", "running", "pending", "blocked", "cancelled")),
                         reverse=True)
            t = lambda expr: one("SELECT to_char((%s)::timestamptz AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')" % expr)
            for rng, want in (({"from": t("now() - interval '1 hour'")}, six),
                              ({"from": t("now() + interval '1 hour'")}, []),
                              ({"to": t("now() - interval '1 hour'")}, []),
                              ({"from": t("now() - interval '1 hour'"), "to": t("now() + interval '1 hour'")}, six)):
                qs = urllib.parse.urlencode({"queue": qq, **rng})
                st, body = http("GET", base + "api/jobs?" + qs)
                got = [j["id"] for j in json.loads(body)["jobs"]]
                assert st == 200 and got == want, (rng, got, want)
            errors.extend(console_errors(drv))
        check("filters_return_right_rows", filters)

        def paging():
            # 4 per page over the 6 jobs of the queue: two pages, keyset cursor
            st, body = http("GET", base + "api/jobs?queue=%s&limit=4" % qq)
            p1 = json.loads(body)
            st, body = http("GET", base + "api/jobs?queue=%s&limit=4&before=%s" % (qq, p1["next"]))
            p2 = json.loads(body)
            got = [j["id"] for j in p1["jobs"] + p2["jobs"]]
            want = [r[0] for r in q("SELECT id FROM taskq.jobs WHERE queue = %s ORDER BY id DESC", qq)]
            assert got == want, (got, want)
        check("keyset_paging", paging)

        # ---- live: a job submitted in psql appears without a reload
        def live():
            apply_filters(queue=qq)
            wait_for(lambda: drv.find_elements(By.ID, "jobs-table"), what="table")
            wait_for(lambda: "live" == drv.find_element(By.ID, "live").text, what="event stream")
            drv.execute_script("window.__noReload = 42")
            new = one("SELECT taskq.submit(%s, '{\"k\": \"live\"}', queue => %s)", TAG + "_ext", qq)
            wait_for(lambda: new in row_ids(drv), timeout=5, what="live row %d" % new)
            assert drv.execute_script("return window.__noReload") == 42, "the page reloaded"
            ids["live"] = new
        check("live_update_without_reload", live)

        # ---- actions: a retry confirmed on the page changes the database
        def retry():
            drv.get(base + "job/%d" % ids["failed"])
            wait_for(lambda: drv.find_element(By.ID, "btn-retry"), what="retry button").click()
            wait_for(lambda: drv.find_element(By.ID, "confirm-ok").is_displayed(), what="confirmation")
            assert status(ids["failed"]) == "failed", "retried before the confirmation"
            drv.find_element(By.ID, "confirm-ok").click()
            wait_for(lambda: status(ids["failed"]) == "pending", what="job retried")
            # and the page follows, live
            wait_for(lambda: "pending" in drv.find_element(By.ID, "job-status").text, timeout=5, what="page updated")
            errors.extend(console_errors(drv))
        check("retry_from_page", retry)

        def cancel_declined():
            drv.get(base + "job/%d" % ids["pending"])
            wait_for(lambda: drv.find_element(By.ID, "btn-cancel"), what="cancel button").click()
            wait_for(lambda: drv.find_element(By.ID, "confirm-cancel").is_displayed(), what="confirmation")
            drv.find_element(By.ID, "confirm-cancel").click()
            wait_for(lambda: not drv.find_element(By.ID, "confirm").is_displayed(), what="closed")
            assert status(ids["pending"]) == "pending"
        check("declined_confirmation_does_nothing", cancel_declined)

        def pause_resume():
            drv.get(base)
            btn = wait_for(lambda: drv.find_element(By.CSS_SELECTOR, 'button.q-pause[data-queue="%s"]' % qq), what="pause")
            btn.click()
            wait_for(lambda: drv.find_element(By.ID, "confirm-ok").is_displayed(), what="confirmation")
            drv.find_element(By.ID, "confirm-ok").click()
            wait_for(lambda: one("SELECT paused FROM taskq.queues WHERE name = %s", qq), what="paused")
            wait_for(lambda: drv.find_element(By.CSS_SELECTOR, 'button.q-resume[data-queue="%s"]' % qq), what="resume").click()
            wait_for(lambda: drv.find_element(By.ID, "confirm-ok").is_displayed(), what="confirmation")
            drv.find_element(By.ID, "confirm-ok").click()
            wait_for(lambda: not one("SELECT paused FROM taskq.queues WHERE name = %s", qq), what="resumed")
            errors.extend(console_errors(drv))
        check("pause_resume_from_page", pause_resume)

        # ---- the dependency graph
        def dag():
            a, b, c, d, e = ids["dag"]
            drv.get(base + "job/%d" % d)
            wait_for(lambda: len(drv.find_elements(By.CSS_SELECTOR, "#dag .node")) == 5, what="5 nodes")
            shown = {int(n.get_attribute("data-id")): n.get_attribute("data-status")
                     for n in drv.find_elements(By.CSS_SELECTOR, "#dag .node")}
            want = dict(q("SELECT id, status::text FROM taskq.jobs WHERE id = ANY(%s)", [a, b, c, d, e]))
            assert shown == want, (shown, want)
            assert len(drv.find_elements(By.CSS_SELECTOR, "#dag path.edge")) == 5
            # layers: a above b and c, which are above d, above e
            y = {i: float(drv.find_element(By.CSS_SELECTOR, '#dag .node[data-id="%d"]' % i)
                          .get_attribute("transform").split(",")[1].rstrip(")")) for i in (a, b, c, d, e)}
            assert y[a] < y[b] == y[c] < y[d] < y[e], y
            fill = drv.find_element(By.CSS_SELECTOR, '#dag .node[data-id="%d"] rect' % a).get_attribute("fill")
            assert fill == "#2e9d5b", fill
            drv.save_screenshot(os.path.join(ART, "dag.png"))
            drv.find_element(By.CSS_SELECTOR, '#dag .node[data-id="%d"]' % a).click()
            wait_for(lambda: drv.current_url.endswith("/job/%d" % a), what="navigated to the parent")
            wait_for(lambda: "Job #%d" % a in drv.find_element(By.TAG_NAME, "h1").text, what="parent page")
            errors.extend(console_errors(drv))
        check("dag_page", dag)

        check("no_console_errors", lambda: not errors or "console: %s" % errors)

        # ---- CSRF
        def csrf():
            tok = token_of(base)
            url = base + "api/action/cancel?id=%d" % ids["pending"]
            assert http("POST", url)[0] == 403
            assert http("POST", url, {"X-CSRF-Token": "0" * 64})[0] == 403
            assert http("POST", url, {"X-CSRF-Token": tok, "Origin": "http://evil.example"})[0] == 403
            assert http("POST", url, {"X-CSRF-Token": tok, "Sec-Fetch-Site": "cross-site"})[0] == 403
            # a form post of another site: no header can be set
            assert http("POST", url, {"Content-Type": "application/x-www-form-urlencoded"}, b"x=1")[0] == 403
            assert status(ids["pending"]) == "pending"
            # with the token and this origin it works
            host = base.split("/")[2]
            st, body = http("POST", base + "api/action/cancel?id=%d" % ids["live"],
                            {"X-CSRF-Token": tok, "Origin": "http://" + host})
            assert st == 200 and status(ids["live"]) == "cancelled", (st, body)
            # the Host must be this dashboard's (DNS rebinding)
            assert http("GET", base + "api/overview", {"Host": "evil.example:80"})[0] == 403
        check("csrf_and_origin", csrf)

        # ---- an unprivileged role sees only its own jobs
        def unprivileged():
            drv.get(ubase + "jobs")
            got = wait_for(lambda: row_ids(drv) if drv.find_elements(By.ID, "jobs-table") else None, what="rows")
            assert got == {ids["mine"]}, got
            assert not drv.find_elements(By.ID, "f-owner"), "owner filter shown to a non-admin"
            for jid in (ids["failed"], ids["dag"][0]):
                st, body = http("GET", ubase + "api/job/%d" % jid)
                assert st == 404 and str(jid) not in body, (st, body)
                assert http("GET", ubase + "api/job/%d/dag" % jid)[0] == 404
            tok = token_of(ubase)
            st, body = http("POST", ubase + "api/action/cancel?id=%d" % ids["pending"], {"X-CSRF-Token": tok})
            assert st == 404 and status(ids["pending"]) == "pending", (st, body)
            st, body = http("POST", ubase + "api/action/pause?queue=%s" % qq, {"X-CSRF-Token": tok})
            assert st == 403, (st, body)
            st, body = http("GET", ubase + "api/jobs?limit=500")
            assert {j["id"] for j in json.loads(body)["jobs"]} == {ids["mine"]}, body
            drv.get(ubase)
            wait_for(lambda: drv.find_element(By.ID, "overview"), what="overview")
            assert USER in drv.find_element(By.ID, "whoami").text
            assert not drv.find_elements(By.CSS_SELECTOR, "button.q-pause"), "pause offered to a non-admin"
            errs = console_errors(drv)
            assert not errs, errs
            # its own job, live: the event stream carries its channel only
            drv.get(ubase + "jobs")
            wait_for(lambda: "live" == drv.find_element(By.ID, "live").text, what="event stream")
            with psycopg.connect("", user=USER, password=PW, autocommit=True) as uc:
                new = uc.execute("SELECT taskq.submit(%s, '{}', queue => %s)", (TAG + "_mine", TAG + "_uq")).fetchone()[0]
            wait_for(lambda: new in row_ids(drv), timeout=5, what="own live row")
        check("unprivileged_sees_only_its_jobs", unprivileged)

        # ---- bad input
        def bad_input():
            cases = [
                ("GET", "nope", 404), ("GET", "api/nope", 404), ("GET", "job/abc", 404),
                ("GET", "api/jobs?status=bogus", 400), ("GET", "api/jobs?before=abc", 400),
                ("GET", "api/jobs?before=-1", 400), ("GET", "api/jobs?limit=0", 400),
                ("GET", "api/jobs?limit=100000", 400), ("GET", "api/jobs?from=garbage", 400),
                ("GET", "api/jobs?to=2020-13-45", 400), ("GET", "api/job/abc", 400),
                ("GET", "api/job/99999999999", 404), ("GET", "api/job/0", 404),
                ("GET", "api/job/%d/nope" % ids["failed"], 404),
                ("DELETE", "api/jobs", 405), ("POST", "api/action/nope", 404),
                ("POST", "api/action/retry?id=abc", 400), ("POST", "api/action/retry?id=99999999999", 404),
                ("POST", "api/action/retry?id=%d" % ids["pending"], 409),
                ("POST", "api/action/dlq_purge?older_than=banana", 400),
            ]
            tok = token_of(base)
            for method, path, want in cases:
                st, body = http(method, base + path, {"X-CSRF-Token": tok} if method == "POST" else {})
                if st != want:
                    return "%s /%s: %d, expected %d (%s)" % (method, path, st, want, body)
                if path.startswith("api/") and st != 405:
                    assert "error" in json.loads(body), body
            # oversized: a declared and an undeclared (chunked) body, a huge header
            st, _ = http("POST", base + "api/action/retry?id=1", {"X-CSRF-Token": tok}, b"x" * 200000)
            assert st == 413, st
            host, port = base.split("/")[2].split(":")
            s = socket.create_connection((host, int(port)), timeout=10)
            s.sendall(b"POST /api/action/retry?id=1 HTTP/1.1\r\nHost: localhost:%s\r\nTransfer-Encoding: chunked\r\n\r\n" % port.encode())
            try:
                for _ in range(40):
                    s.sendall(b"1000\r\n" + b"y" * 4096 + b"\r\n")
                s.sendall(b"0\r\n\r\n")
            except OSError:
                pass
            assert b" 413 " in s.recv(200), "chunked body not refused"
            s.close()
            st, _ = http("GET", base + "api/overview", {"X-Big": "z" * 60000})
            assert st in (413, 431), st
        check("bad_input_statuses", bad_input)

        def slow_clients():
            host, port = base.split("/")[2].split(":")
            # half a request, and an event stream that never reads
            half = socket.create_connection((host, int(port)))
            half.sendall(b"GET /api/overview HTTP/1.1\r\nHost: loc")
            stuck = socket.socket()
            stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            stuck.connect((host, int(port)))
            stuck.sendall(b"GET /events HTTP/1.1\r\nHost: localhost:%s\r\n\r\n" % port.encode())
            # others are served meanwhile (http() gives up after 10 s)
            assert http("GET", base + "api/overview")[0] == 200
            # the server's end of it leaves ESTABLISHED (its FIN may wait
            # behind the unread data, so the client cannot tell)
            cport = stuck.getsockname()[1]

            def closed():
                out = subprocess.run(["ss", "-Htn", "state", "established",
                                      "( sport = :%s and dport = :%d )" % (port, cport)],
                                     capture_output=True, text=True, check=True).stdout
                return out.strip() == ""
            assert not closed(), "ss does not see the stream"
            # flood the stream it does not read: it is dropped, the server lives
            q("SELECT count(*) FROM taskq.submit_many((SELECT jsonb_agg(jsonb_build_object("
              "'job_type', %s::text, 'queue', %s::text)) FROM generate_series(1, 3000)))", TAG + "_flood", TAG + "_flood")

            wait_for(closed, timeout=90, what="the non-reading stream dropped")
            half.close()
            stuck.close()
            assert http("GET", base + "api/overview")[0] == 200
            assert procs[0].poll() is None, "the dashboard exited"
        check("slow_clients_do_not_block", slow_clients)

        # ---- listening elsewhere needs --auth; Basic authentication
        def auth():
            r = subprocess.run([TASKQ, "web", "--listen", "0.0.0.0:0"], capture_output=True, text=True, timeout=20)
            assert r.returncode == 2 and "requires --auth" in r.stderr, (r.returncode, r.stderr)
            pwfile = os.path.join(ART, "web-auth")
            with open(pwfile, "w") as f:
                f.write("admin:s3cret-%s\n" % TAG)
            abase = start_web("--auth", pwfile)
            assert http("GET", abase + "api/overview")[0] == 401
            import base64
            bad = base64.b64encode(b"admin:wrong").decode()
            good = base64.b64encode(("admin:s3cret-%s" % TAG).encode()).decode()
            assert http("GET", abase + "api/overview", {"Authorization": "Basic " + bad})[0] == 401
            assert http("GET", abase + "api/overview", {"Authorization": "Basic " + good})[0] == 200
            os.unlink(pwfile)
        check("listen_and_auth", auth)

        check("server_still_running", lambda: all(p.poll() is None for p in procs) or "a dashboard exited")
    finally:
        drv.quit()
        cleanup()


if __name__ == "__main__":
    try:
        main()
    except Exception as e:
        report("setup", False, "%s: %s" % (type(e).__name__, e))
        try:
            cleanup()
        except Exception:
            pass
    sys.exit(1 if failures else 0)
