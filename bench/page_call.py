"""Benchmark: the requests a shop's visitors make, measured with wrk next to a bare Starlette endpoint.

One run, on loopback, at 1 and 32 connections (a warm-up, then a fixed duration each):
1. `POST /v1/page` for the demo's home page as the embed script sends it (its slots and its
   menu, read from the served page), for returning visitors with 200 events of history each
   (32 of them in turn: token header, a UK address in X-Forwarded-For, desktop Chrome);
2. the same page call for a new visitor on every request (no token);
3. `GET /v1/fragments/banner?placement=top` for returning visitors;
4. `GET /v1/fragments/search?q=bag` for returning visitors (and, with --search-items N,
   on a generated N-item shop);
5. `POST /v1/events`, batches of 10 events from 16 connections: acknowledged events/s, on
   SQLite and, with --postgres URL, on PostgreSQL.
The server under test is `vitrine demo` (one uvicorn worker, SQLite) started by this script;
the baseline, bench/bare_app.py, runs under the same uvicorn settings (one worker, uvloop +
httptools, no access log). Each row gives req/s, latency percentiles, every non-2xx answer,
timeouts, the ratio to the baseline at the same connection count, and the CPU wrk and the
server used. Prints a table and writes bench/results/page_call.json.

    .venv/bin/python bench/page_call.py [--data-dir DIR] [--duration 8] [--warmup 2] [--connections 1 32]
        [--postgres postgresql://postgres@127.0.0.1:5432/postgres] [--workers N ...]
        [--search-items 100000] [--visitors 32] [--tree DIR]

docs/benchmarks.md says what each case and column means.

Needs wrk (Debian: `apt-get install -y wrk`).
"""

from __future__ import annotations

import argparse
import csv
import http.client
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.loadgen import free_port, machine_info, require_wrk, run_wrk, start, start_bare, stop, wait_for  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "page_call.json"
SHOP = "demo"
UK_ADDRESS = "81.2.69.160"
CHROME = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
          "Chrome/126.0.0.0 Safari/537.36")
SEARCH_QUERY = "bag"
HISTORY_EVENTS = 200
# The returning visitor's interests: shares of their item views by category.
TASTE = {"Christmas": 0.35, "Candles and lights": 0.2, "Bags": 0.15, "Home decor": 0.15, "Kitchen": 0.1, "Gifts": 0.05}
EVENT_BATCH = 10
EVENT_CONNECTIONS = 16
EVENT_VISITORS = 16
SCRIPT_BUDGET_MS = 1500  # the embed script gives up on the page call after this (static/vitrine.js)
SANE_BARE_REQ_S = 2000


# -- the home page as the embed script sees it --------------------------------------------
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


def _dataset_key(attr: str) -> str:
    """`data-vitrine-slot` -> `vitrineSlot`, as the DOM's dataset names it."""
    return re.sub(r"-([a-z])", lambda m: m.group(1).upper(), attr.removeprefix("data-"))


class HomePage(HTMLParser):
    """What static/vitrine.js collects from a page: page type, title, slots, menu entries."""

    def __init__(self) -> None:
        super().__init__()
        self.page_type, self.title, self.slots, self.nav = "", "", [], []
        self._in_title, self._nav_stack, self._nav_seen = False, None, False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "title":
            self._in_title = True
        if "data-vitrine-page" in a and not self.page_type:
            self.page_type = a["data-vitrine-page"]
        if "data-vitrine-slot" in a:
            data = {_dataset_key(k): v for k, v in a.items() if k.startswith("data-")}
            self.slots.append({
                "id": a["data-vitrine-slot"], "widget": a.get("data-widget") or "banner",
                "attrs": {k: v[:200] for k, v in data.items() if k not in ("vitrineSlot", "widget", "vitrineFilled")},
            })
        if self._nav_stack is not None:
            # A menu entry is a [data-category] not inside another one (a submenu moves with it).
            if "data-category" in a and not any(self._nav_stack):
                self.nav.append(a["data-category"][:128])
            if tag not in VOID:
                self._nav_stack.append("data-category" in a)
        elif "data-vitrine-nav" in a and not self._nav_seen:
            self._nav_stack, self._nav_seen = [False], True

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False
        if self._nav_stack:
            self._nav_stack.pop()
            if not self._nav_stack:
                self._nav_stack = None

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title += data


def home_page_body(port: int) -> dict:
    """The body of the home page's `POST /v1/page`, built from the served /demo/ page."""
    status, html = request(port, "GET", "/demo/")
    if status != 200:
        raise SystemExit(f"GET /demo/ answered {status}: cannot read the home page's slots")
    page = HomePage()
    page.feed(html)
    if not page.slots:
        raise SystemExit("the demo home page has no data-vitrine-slot element")
    body = {
        "shop": SHOP, "token": None,
        "page": {"url": f"http://127.0.0.1:{port}/demo/", "referrer": "", "title": page.title.strip()[:500],
                 "type": page.page_type, "item_id": "", "category": ""},
        "slots": page.slots,
    }
    if page.nav:
        body["nav"] = page.nav[:60]
    return body


# -- HTTP helpers -----------------------------------------------------------------------
def request(port: int, method: str, path: str, body: dict | None = None, headers: dict | None = None) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    data = json.dumps(body, separators=(",", ":")).encode() if body is not None else None
    conn.request(method, path, body=data, headers={"Content-Type": "application/json", **(headers or {})})
    response = conn.getresponse()
    text = response.read().decode("utf-8", "replace")
    conn.close()
    return response.status, text


def browser_headers(port: int, token: str | None = None, post: bool = False) -> dict:
    """What Chrome sends with the embed script's fetch (the demo page is on the server's origin)."""
    headers = {"User-Agent": CHROME, "X-Forwarded-For": UK_ADDRESS, "Accept": "*/*",
               "Accept-Language": "en-GB,en;q=0.9"}
    if post:
        headers |= {"Content-Type": "application/json", "Origin": f"http://127.0.0.1:{port}"}
    if token:
        headers["X-Visitor-Token"] = token
    return headers


def page_body(home: dict, token: str | None) -> bytes:
    """The page call's body as JSON.stringify writes it; TOKEN_SLOT is filled in per request by wrk."""
    return json.dumps({**home, "token": token}, separators=(",", ":")).encode()


TOKEN_SLOT = "__TOKEN__"  # bench/wrk_report.lua puts each request's visitor token here


# -- visitors ---------------------------------------------------------------------------
def read_catalog(tree: Path) -> dict[str, list[str]]:
    """The demo catalog's item ids by category (what the demo imports)."""
    by_category: dict[str, list[str]] = {}
    with open(tree / "server" / "demo" / "data" / "catalog.csv", newline="") as f:
        for row in csv.DictReader(f):
            by_category.setdefault(row["category"], []).append(row["item_id"])
    return by_category


def history_events(catalog: dict[str, list[str]], rng: random.Random, tag: str) -> list[dict]:
    """200 events over the last four days: views across categories, cart adds, two orders, searches."""
    categories = [c for c in TASTE if c in catalog] or list(catalog)
    weights = [TASTE.get(c, 1.0) for c in categories]
    now = datetime.now(timezone.utc)
    kinds = ["view_item"] * 178 + ["add_to_cart"] * 14 + ["search"] * 6 + ["purchase"] * 2
    rng.shuffle(kinds)
    cart: list[str] = []
    events = []
    for n, kind in enumerate(kinds[:HISTORY_EVENTS]):
        # Oldest first, spread over 96 hours (the API takes events up to 7 days old).
        ts = now - timedelta(hours=96) + timedelta(hours=96 * n / HISTORY_EVENTS, seconds=rng.randrange(60))
        event = {"event_id": f"hist-{tag}-{n}", "type": kind, "ts": ts.strftime("%Y-%m-%dT%H:%M:%S.%fZ")}
        item = rng.choice(catalog[rng.choices(categories, weights)[0]])
        if kind in ("view_item", "add_to_cart"):
            event |= {"item_id": item, "items": [{"item_id": item, "quantity": 1}]}
            if kind == "add_to_cart":
                cart.append(item)
                event |= {"value": 2.95, "currency": "GBP"}
        elif kind == "search":
            event["search_term"] = rng.choice(["bag", "lantern", "christmas", "candle", "mug", "card"])
        else:
            bought = (cart or [item])[-3:]
            cart = []
            event |= {"transaction_id": f"order-{tag}-{n}", "value": round(2.95 * len(bought), 2), "currency": "GBP",
                      "items": [{"item_id": i, "quantity": 1, "price": 2.95} for i in bought]}
        events.append(event)
    return events


def post_events(port: int, token: str | None, events: list[dict]) -> str:
    """One batch, as the embed script's beacon sends it (text/plain, token in the body); the token back."""
    status, text = request(port, "POST", f"/v1/events?shop={SHOP}", {"shop": SHOP, "token": token, "events": events},
                           {**browser_headers(port), "Content-Type": "text/plain;charset=UTF-8",
                            "Origin": f"http://127.0.0.1:{port}"})
    if status != 202:
        raise SystemExit(f"POST /v1/events answered {status}: {text[:300]}")
    return json.loads(text)["token"]


def returning_visitor(port: int, home: dict, catalog: dict[str, list[str]], seed: int, tag: str) -> str:
    """A new visitor (a first page call gives the token), then 200 events of history (drawn from `seed`)."""
    status, text = request(port, "POST", f"/v1/page?shop={SHOP}", home, browser_headers(port, post=True))
    if status != 200:
        raise SystemExit(f"the first page call answered {status}: {text[:300]}")
    token = json.loads(text)["token"]
    events = history_events(catalog, random.Random(seed), tag)
    for start_at in range(0, len(events), 50):  # the embed script sends at most 50 per beacon
        post_events(port, token, events[start_at:start_at + 50])
    return token


def check_page_call(port: int, home: dict, token: str | None) -> dict:
    """What the measured page call answers: the visitor's kind, fragments, errors, menu."""
    status, text = request(port, "POST", f"/v1/page?shop={SHOP}", json.loads(page_body(home, token)),
                           browser_headers(port, token, post=True))
    if status != 200:
        return {"status": status, "body": text[:300]}
    answer = json.loads(text)
    return {
        "status": status, "visitor": answer.get("visitor"), "fragments": sorted(answer.get("fragments", {})),
        "popups": [p.get("campaign") for p in answer.get("popups", [])], "errors": answer.get("errors", {}),
        "nav_moved": (answer.get("nav") or {}).get("moved"), "bytes": len(text),
    }


# -- the servers ------------------------------------------------------------------------
class Server:
    """A `vitrine` process serving on a free port, its output in a log file."""

    def __init__(self, label: str, tree: Path, data_dir: Path, log: Path, command: list[str], database_url: str = ""):
        self.label, self.port, self.log, self.command = label, free_port(), log, command
        self.started, self.setup_s = time.perf_counter(), None
        log.write_bytes(b"")
        # VITRINE_DATABASE_URL="" is the default: the SQLite file in the data dir. Retraining
        # is off: the demo's in-process jobs would otherwise train a new model in the middle
        # of a case (the history the benchmark sets up is enough new data), and a deployment
        # runs it in `vitrine worker`, not in the web workers measured here.
        env = {"VITRINE_TRAIN_TIME_BUDGET_S": "10", "PYTHONPATH": str(tree), "VITRINE_DATABASE_URL": database_url,
               "VITRINE_RETRAIN_MIN_NEW_INTERACTIONS": "0"}
        self.proc = start([sys.executable, "-m", "server.cli", "--data-dir", str(data_dir), *command,
                           "--port", str(self.port)], env=env, cwd=tree, log=log)

    def wait(self, timeout: float = 600) -> "Server":
        try:
            wait_for(self.port, "/v1/health", timeout, self.proc)
        except SystemExit:
            print(self.log_tail())
            raise
        self.setup_s = round(time.perf_counter() - self.started, 1)
        print(f"{self.label}: serving on port {self.port} after {self.setup_s:.0f} s", flush=True)
        if self.command[0] == "demo":
            self.wait_for_jobs()
        return self

    def wait_for_jobs(self, timeout: float = 120) -> None:
        """`vitrine demo` runs the background jobs in its own process, all of them as soon as
        it takes their lease: the first round (the rollups over the simulated month, a few
        seconds of CPU) must not fall in a measurement. Later rounds come every few minutes
        (docs/benchmarks.md says which)."""
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            text = self.log.read_text(errors="replace")
            taken = text.find("took the lease")
            if taken >= 0 and re.search(r"^\S+ \S+ rollups: ", text[taken:], re.MULTILINE):
                time.sleep(1)  # the jobs of the round that finish after the rollups
                return
            time.sleep(0.5)
        print(f"{self.label}: the demo's first round of background jobs did not end within {timeout:.0f} s; measuring anyway",
              flush=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:]) if self.log.exists() else ""

    def stop(self) -> None:
        stop(self.proc)


def log_problems(log: Path, since: int) -> dict:
    """Tracebacks and non-2xx lines of Vitrine's access log written after byte `since`."""
    if not log.exists():
        return {}
    with open(log, "rb") as f:
        f.seek(since)
        text = f.read().decode("utf-8", "replace")
    statuses: dict[str, int] = {}
    for match in re.finditer(r"^\S+:\s+(?:GET|POST|OPTIONS) \S+ (\d+) [\d.]+ms$", text, re.MULTILINE):
        if not match.group(1).startswith("2"):
            statuses[match.group(1)] = statuses.get(match.group(1), 0) + 1
    found = {"tracebacks": text.count("Traceback (most recent call last)")}
    if statuses:
        found["non_2xx_in_access_log"] = statuses
    return found


def create_database(url: str) -> tuple[str, str, str]:
    """A fresh database on the PostgreSQL server of `url`: (its name, libpq URL of `url`, Vitrine's URL)."""
    import psycopg

    parts = urlsplit(url)
    admin = urlunsplit(parts._replace(scheme="postgresql"))
    name = f"vitrine_bench_{os.getpid()}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return name, admin, urlunsplit(parts._replace(scheme="postgresql+psycopg", path=f"/{name}"))


def drop_database(admin: str, name: str) -> None:
    import psycopg

    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def search_shop(tree: Path, directory: Path, items: int) -> list[str]:
    """A generated `items`-item shop (bench/search_http.py's), kept in `directory`; 16 returning visitors' tokens."""
    tokens = directory / "bench-tokens.json"
    if not tokens.exists():
        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir(parents=True)
        print(f"building a {items:,}-item shop in {directory} ...", flush=True)
        started = time.perf_counter()
        code = ("import json, sys; from pathlib import Path; from bench.search_http import build_shop; "
                "print('TOKENS ' + json.dumps(build_shop(Path(sys.argv[1]), int(sys.argv[2]))[:16]))")
        done = subprocess.run([sys.executable, "-c", code, str(directory), str(items)], cwd=tree, text=True,
                              capture_output=True, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": f"{tree}:{ROOT}"})
        line = next((l for l in done.stdout.splitlines() if l.startswith("TOKENS ")), None)
        if done.returncode or line is None:
            raise SystemExit(f"building the search shop failed:\n{done.stderr[-2000:]}")
        tokens.write_text(line.removeprefix("TOKENS "))
        print(f"built in {time.perf_counter() - started:.0f} s", flush=True)
    return json.loads(tokens.read_text())


# -- measuring --------------------------------------------------------------------------
BARE_PAGE, BARE_FRAGMENT, BARE_EVENTS = "POST /v1/page (bare)", "GET /v1/fragments/banner (bare)", "POST 10 events (bare)"


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.rows: list[dict] = []
        self.checks: dict[str, dict] = {}
        self.notes: list[str] = []
        self.memory: dict | None = None

    def measure(self, setup: str, case: str, baseline: str | None, url: str, connections: int, server_pid: int | None,
                **wrk: object) -> dict:
        """A warm-up, then the measured run; the row names the bare case it is compared with."""
        args = self.args
        warmup = {"requests": 0}
        if args.warmup > 0:
            warmup = run_wrk(url, connections, args.warmup, threads=args.threads, timeout_s=args.timeout,
                             **wrk)  # type: ignore[arg-type]
        row = run_wrk(url, connections, args.duration, threads=args.threads, timeout_s=args.timeout,
                      server_pid=server_pid, **wrk)  # type: ignore[arg-type]
        row = {"setup": setup, "case": case, "baseline": baseline, "warmup_requests": warmup["requests"], **row}
        self.rows.append(row)
        print(f"  {setup:<22} {case:<48} c={connections:<3} {row['req_per_s']:>9,.1f} req/s  p50 {row['p50_ms']:.2f} ms  "
              f"p99 {row['p99_ms']:.2f} ms  non-2xx {row['non_2xx']}  timeouts {row['timeouts']}", flush=True)
        return row

    def bare(self, port: int, pid: int, home: dict, setup: str = "bare Starlette", events: bool = True) -> None:
        for c in self.args.connections:
            self.measure(setup, BARE_PAGE, None, f"http://127.0.0.1:{port}/v1/page", c, pid,
                         method="POST", body=page_body(home, None), headers={"Content-Type": "application/json"})
            self.measure(setup, BARE_FRAGMENT, None, f"http://127.0.0.1:{port}/v1/fragments/banner", c, pid)
        if events:
            self.measure(setup, BARE_EVENTS, None, f"http://127.0.0.1:{port}/v1/page", EVENT_CONNECTIONS, pid,
                         method="POST", body=events_bare_body(), headers={"Content-Type": "text/plain;charset=UTF-8"})

    def returning(self, server: "Server", home: dict, catalog: dict[str, list[str]], what: str, c: int) -> list[str]:
        """Fresh returning visitors for one measurement: visitor n of every measurement has the same history."""
        return [returning_visitor(server.port, home, catalog, v, f"{self.args.run_id}-{server.port}-{what}-{c}-{v}")
                for v in range(self.args.visitors)]

    def check(self, setup: str, name: str, answer: object) -> None:
        self.checks.setdefault(setup, {}).setdefault(name, answer)

    def vitrine_cases(self, server: Server, home: dict, catalog: dict[str, list[str]], events_only: bool = False) -> None:
        """Cases 1-5 against `server` (only 5, the event batches, with `events_only`)."""
        port, pid, setup = server.port, server.proc.pid, server.label
        page_url = server.url(f"/v1/page?shop={SHOP}")
        banner = f"/v1/fragments/banner?shop={SHOP}&placement=top"
        search = f"/v1/fragments/search?shop={SHOP}&q={quote(SEARCH_QUERY)}"
        for c in [] if events_only else self.args.connections:
            tokens = self.returning(server, home, catalog, "page", c)
            self.check(setup, "page call, returning visitor", check_page_call(port, home, tokens[0]))
            row = self.measure(setup, "POST /v1/page home, returning visitor", BARE_PAGE, page_url, c, pid,
                               method="POST", body=page_body(home, TOKEN_SLOT), headers=browser_headers(port, post=True),
                               env={"WRK_TOKENS": ",".join(tokens)})
            # Each page call records a page view, but a home page view (no item) does not enter
            # the visitor state the server reads: the history set up stays what it ranks by,
            # however many calls a visitor makes (the checks after each case say so).
            row["page_calls_per_visitor"] = round((row["warmup_requests"] + row["requests"]) / len(tokens), 1)
            self.check(setup, f"page call, returning visitor, after the {c}-connection case",
                       check_page_call(port, home, tokens[0]))
            self.check(setup, "page call, new visitor", check_page_call(port, home, None))
            self.measure(setup, "POST /v1/page home, new visitor each time", BARE_PAGE, page_url, c, pid,
                         method="POST", body=page_body(home, None), headers=browser_headers(port, post=True))
            tokens = self.returning(server, home, catalog, "banner", c)
            status, text = request(port, "GET", banner, headers=browser_headers(port, tokens[0]))
            campaigns = re.findall(r'data-vitrine-campaign="([^"]+)"', text)
            self.check(setup, "banner", {"status": status, "campaigns": campaigns})
            self.measure(setup, "GET banner fragment, returning", BARE_FRAGMENT, server.url(banner), c, pid,
                         headers=browser_headers(port), env={"WRK_TOKENS": ",".join(tokens)})
            tokens = self.returning(server, home, catalog, "search", c)
            status, text = request(port, "GET", search, headers=browser_headers(port, tokens[0]))
            self.check(setup, "search", {"status": status, "items_shown": text.count("data-item-id=")})
            self.measure(setup, f"GET search fragment '{SEARCH_QUERY}', returning", BARE_FRAGMENT, server.url(search),
                         c, pid, headers=browser_headers(port), env={"WRK_TOKENS": ",".join(tokens)})
        # The batches come from EVENT_VISITORS visitors in turn (their tokens from a first beacon each).
        tokens = [post_events(port, None, [{"event_id": f"first-{self.args.run_id}-{port}-{v}", "type": "page_view"}])
                  for v in range(EVENT_VISITORS)]
        items = [i for ids in catalog.values() for i in ids]
        row = self.measure(
            setup, f"POST /v1/events, {EVENT_BATCH} events a batch", BARE_EVENTS, server.url(f"/v1/events?shop={SHOP}"),
            EVENT_CONNECTIONS, pid, method="POST",
            headers={**browser_headers(port), "Content-Type": "text/plain;charset=UTF-8", "Origin": server.url("")},
            env={"WRK_EVENTS": "1", "WRK_BATCH": str(EVENT_BATCH), "WRK_TOKENS": ",".join(tokens),
                 "WRK_ITEMS": ",".join(items), "WRK_SHOP": SHOP, "WRK_RUN_ID": f"{self.args.run_id}-{port}"},
        )
        row["events_per_s"] = round(row["statuses"].get(202, 0) * EVENT_BATCH / row["duration_s"], 1)

    def search_cases(self, server: Server, token: str, items: int) -> None:
        path = f"/v1/fragments/search?shop=bench&q={quote(SEARCH_QUERY)}"
        for c in self.args.connections:
            self.measure(server.label, f"GET search fragment '{SEARCH_QUERY}', {items:,} items, returning", BARE_FRAGMENT,
                         server.url(path), c, server.proc.pid, headers=browser_headers(server.port, token))


    def memory_case(self, server: Server, tokens: list[str], requests: int) -> None:
        """The worker's resident memory over `requests` page calls on the big shop (a panel of
        top picks and a search for each; returning visitors in turn, and every fourth chunk a
        new visitor per request), sampled after each chunk of load."""
        body = {"shop": "bench", "page": {"url": "http://127.0.0.1/", "type": "home"},
                "slots": [{"id": "picks", "widget": "recommendations", "attrs": {"strategy": "top_picks", "count": "8"}},
                          {"id": "found", "widget": "search", "attrs": {"q": SEARCH_QUERY}}]}
        url = server.url("/v1/page?shop=bench")
        headers = {k: v for k, v in browser_headers(server.port, post=True).items() if k != "Origin"}
        samples = [{"requests": 0, "rss_mb": rss_mb(server.proc.pid)}]
        done, chunk = 0, 0
        print(f"  memory: {requests:,} page calls on the {self.args.search_items:,}-item shop ...", flush=True)
        while done < requests:
            new = chunk % 4 == 3
            row = run_wrk(url, 32, 10, threads=self.args.threads, timeout_s=self.args.timeout, method="POST",
                          body=page_body(body, None if new else TOKEN_SLOT), headers=headers,
                          env=None if new else {"WRK_TOKENS": ",".join(tokens)})
            if row["non_2xx"]:
                raise SystemExit(f"memory case: {row['non_2xx']} answers were not 2xx: {row['statuses']}")
            done += row["requests"]
            chunk += 1
            samples.append({"requests": done, "rss_mb": rss_mb(server.proc.pid), "req_per_s": row["req_per_s"]})
            print(f"    after {done:>8,} requests: {samples[-1]['rss_mb']:.1f} MB ({row['req_per_s']:.0f} req/s)", flush=True)
        # Growth after the first tenth (caches fill as visitors and queries come).
        settled = next(s for s in samples if s["requests"] >= requests / 10)
        self.memory = {"requests": done, "samples": samples, "rss_mb_start": samples[0]["rss_mb"],
                       "rss_mb_settled": settled["rss_mb"], "rss_mb_end": samples[-1]["rss_mb"],
                       "growth_after_settled_mb": round(samples[-1]["rss_mb"] - settled["rss_mb"], 1)}


def rss_mb(pid: int) -> float:
    """Resident memory of process `pid` and its children (a `vitrine serve` worker), in MB."""
    total, todo = 0, [pid]
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    children.setdefault(int(f.read().rsplit(")", 1)[1].split()[1]), []).append(int(entry))
            except OSError:
                continue
    while todo:
        current = todo.pop()
        try:
            with open(f"/proc/{current}/status") as f:
                total += next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
        except (OSError, StopIteration):
            pass
        todo += children.get(current, [])
    return round(total / 1024, 1)


def events_bare_body() -> bytes:
    now = int(time.time() * 1000)
    events = [{"event_id": f"bare-{n}", "type": "view_item", "ts": now, "item_id": "22632",
               "items": [{"item_id": "22632", "quantity": 1}]} for n in range(EVENT_BATCH)]
    return json.dumps({"shop": SHOP, "token": "x" * 120, "events": events}, separators=(",", ":")).encode()


def add_ratios(rows: list[dict]) -> None:
    """Each Vitrine row's req/s over its bare case's at the same connection count (the first measurement)."""
    bare = {}
    for r in rows:
        if r["setup"] == "bare Starlette":
            bare.setdefault((r["case"], r["connections"]), r["req_per_s"])
    for r in rows:
        if r["baseline"]:
            base = bare.get((r["baseline"], r["connections"]))
            r["ratio_to_bare"] = round(r["req_per_s"] / base, 4) if base else None


def bottlenecks(rows: list[dict], cpus: int) -> list[str]:
    notes = []
    for r in rows:
        where = f"{r['setup']}, {r['case']}, {r['connections']} conn."
        if r["wrk_cpu_pct"] >= 85 * r["threads"]:
            notes.append(f"{where}: wrk used {r['wrk_cpu_pct']:.0f}% of a core: the load generator may be the limit")
        # Closed loop: each connection waits for its answer, so connections = rate x mean
        # latency (Little's law). wrk's latency figures that break it by far are not to be
        # believed (seen: PostgreSQL, new visitor, 1 connection, mean 19 ms at 341 req/s, where
        # a client of our own timed p99 at 9 ms); the rate still is.
        if r.get("mean_ms") and r["req_per_s"] and abs(r["req_per_s"] * r["mean_ms"] / 1000 / r["connections"] - 1) > 0.3:
            r["latency_suspect"] = True
            notes.append(f"{where}: wrk's latencies disagree with its rate (mean {r['mean_ms']:.1f} ms at "
                         f"{r['req_per_s']:.0f} req/s over {r['connections']} connections): its p50-p99 are not reliable here")
        if r["server_cpu_pct"] is not None and r["wrk_cpu_pct"] + r["server_cpu_pct"] >= 90 * cpus:
            notes.append(f"{where}: wrk ({r['wrk_cpu_pct']:.0f}%) and the server ({r['server_cpu_pct']:.0f}%) "
                         f"filled the {cpus} cores")
    busy = [r for r in rows if r["others_cpu_pct"] >= 25]
    if busy:
        shares = sorted(r["others_cpu_pct"] for r in busy)
        notes.append(f"other processes used {shares[0]:.0f}-{shares[-1]:.0f}% of a core "
                     f"(median {shares[len(shares) // 2]:.0f}%) during {len(busy)} of {len(rows)} rows (column oth%): "
                     "those rows are slower than on a quiet machine")
    return notes


def print_table(rows: list[dict]) -> None:
    head = (f"{'setup':<22} {'case':<52} {'conn':>4} {'req/s':>9} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} "
            f"{'max ms':>8} {'>1.5s':>6} {'non-2xx':>8} {'err':>5} {'% bare':>7} {'wrk%':>5} {'srv%':>5} {'oth%':>5}")
    print(head)
    print("-" * len(head))
    for r in rows:
        errors = r["timeouts"] + sum(r["socket_errors"].values())
        ratio = f"{100 * r['ratio_to_bare']:.2f}%" if r.get("ratio_to_bare") is not None else ""
        print(f"{r['setup']:<22} {r['case'][:52]:<52} {r['connections']:>4} {r['req_per_s']:>9,.1f} {r['p50_ms']:>8.2f} "
              f"{r['p90_ms']:>8.2f} {r['p99_ms']:>8.2f} {r['max_ms']:>8.1f} {r['over_budget_pct']:>5.1f}% "
              f"{r['non_2xx']:>8} {errors:>5} {ratio:>7} {r['wrk_cpu_pct']:>5.0f} {r['server_cpu_pct'] or 0:>5.0f} "
              f"{r['others_cpu_pct']:>5.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, help="keep the prepared demo shop (and generated shops) here, to "
                        "reuse across runs; default: a temporary directory, removed at the end")
    parser.add_argument("--duration", type=int, default=8, help="seconds measured per case (default 8)")
    parser.add_argument("--warmup", type=int, default=2, help="seconds of warm-up before each case (default 2)")
    parser.add_argument("--connections", type=int, nargs="+", default=[1, 32], help="connection counts (default 1 32)")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (default 1: the other core is the server's)")
    parser.add_argument("--visitors", type=int, default=32, help="returning visitors, 200 events of history each, "
                        "that the requests of a returning-visitor case take turns as (default 32)")
    parser.add_argument("--timeout", type=int, default=10, help="wrk's request timeout in seconds (default 10)")
    parser.add_argument("--postgres", metavar="URL", help="also measure on PostgreSQL: a fresh database is created "
                        "on this server (e.g. postgresql://postgres@127.0.0.1:5432/postgres) and dropped at the end")
    parser.add_argument("--workers", type=int, nargs="+", default=[], metavar="N",
                        help="also run every case against `vitrine serve --workers N` on PostgreSQL (with --postgres), "
                             "and the event batches against it on SQLite (N > 1)")
    parser.add_argument("--search-items", type=int, default=0, metavar="N",
                        help="also search a generated N-item shop (bench/search_http.py's; 100000 takes about a minute)")
    parser.add_argument("--memory-requests", type=int, default=0, metavar="N",
                        help="with --search-items: the worker's memory over N page calls on that shop (100000 takes "
                        "about 6 minutes)")
    parser.add_argument("--tree", type=Path, default=ROOT,
                        help="serve the code of this checkout (e.g. a `git worktree` of another commit); default: this one")
    parser.add_argument("--output", type=Path, default=RESULTS, help=f"results file (default {RESULTS.relative_to(ROOT)})")
    args = parser.parse_args()
    if args.memory_requests and not args.search_items:
        parser.error("--memory-requests needs --search-items (the memory is measured on that shop)")
    require_wrk()
    args.run_id = f"r{int(time.time())}"
    args.tree = args.tree.resolve()
    began = time.perf_counter()
    machine = machine_info(args.tree)
    print(f"{machine['cpus']} CPUs ({machine['cpu_model']}), load {machine['load_average_1m']}, Python {machine['python']}, "
          f"{machine['wrk']}; serving {args.tree} at {machine['commit'][:10]}"
          f"{' with uncommitted changes' if machine['uncommitted_changes'] else ''}", flush=True)

    temporary = args.data_dir is None
    base = Path(tempfile.mkdtemp(prefix="vitrine-bench-page-")) if temporary else args.data_dir.resolve()
    base.mkdir(parents=True, exist_ok=True)
    logs = base / "logs"
    logs.mkdir(exist_ok=True)
    demo_dir = base / "demo"
    catalog = read_catalog(args.tree)
    bench = Bench(args)
    log_findings: dict = {}
    pg: tuple[str, str, str] | None = None
    servers: list[Server] = []
    bare_port = free_port()
    bare = start_bare(bare_port, log=logs / "bare.log")
    try:
        wait_for(bare_port, "/v1/fragments/banner", 60, bare)
        print(f"starting vitrine demo on {demo_dir} (sets the demo shop up the first time, about a minute) ...", flush=True)
        sqlite = Server("SQLite, 1 worker", args.tree, demo_dir, logs / "sqlite.log", ["demo"])
        servers.append(sqlite)
        sqlite.wait()
        home = home_page_body(sqlite.port)
        print(f"home page call: page type {home['page']['type']!r}, slots "
              f"{', '.join(s['id'] + ' (' + s['widget'] + ')' for s in home['slots'])}; {len(home.get('nav', []))} menu entries",
              flush=True)

        print("baseline:", flush=True)
        bench.bare(bare_port, bare.pid, home)
        print("vitrine:", flush=True)
        mark = sqlite.log.stat().st_size
        bench.vitrine_cases(sqlite, home, catalog)
        log_findings[sqlite.label] = log_problems(sqlite.log, mark)
        sqlite.stop()
        for n in [n for n in args.workers if n > 1]:
            # Several processes on one SQLite file (one machine): the event batches, where
            # each worker's group writer takes the database's write lock in turn.
            label = f"SQLite, {n} workers"
            server = Server(label, args.tree, demo_dir, logs / f"sqlite-{n}.log", ["serve", "--workers", str(n)])
            servers.append(server)
            server.wait()
            mark = server.log.stat().st_size
            bench.vitrine_cases(server, home, catalog, events_only=True)
            log_findings[label] = log_problems(server.log, mark)
            server.stop()

        if args.search_items:
            tokens = search_shop(args.tree, base / f"search-{args.search_items}", args.search_items)
            big = Server(f"SQLite, {args.search_items // 1000}k items", args.tree, base / f"search-{args.search_items}",
                         logs / "search.log", ["serve"])
            servers.append(big)
            big.wait()
            mark = big.log.stat().st_size
            bench.search_cases(big, tokens[0], args.search_items)
            if args.memory_requests:
                bench.memory_case(big, tokens, args.memory_requests)
            log_findings[big.label] = log_problems(big.log, mark)
            big.stop()

        if args.postgres:
            pg = create_database(args.postgres)
            print(f"PostgreSQL: database {pg[0]} (importing the demo shop into it) ...", flush=True)
            server = Server("PostgreSQL, 1 worker", args.tree, demo_dir, logs / "postgres.log", ["demo"], pg[2])
            servers.append(server)
            server.wait()
            if 1 not in args.workers:  # events only; --workers 1 measures every case
                mark = server.log.stat().st_size
                bench.vitrine_cases(server, home, catalog, events_only=True)
                log_findings[server.label] = log_problems(server.log, mark)
            server.stop()
            for n in args.workers:
                label = f"PostgreSQL, {n} worker{'s' if n > 1 else ''}"
                server = Server(label, args.tree, demo_dir, logs / f"postgres-{n}.log",
                                ["serve", "--workers", str(n)], pg[2])
                servers.append(server)
                server.wait()
                mark = server.log.stat().st_size
                bench.vitrine_cases(server, home, catalog)
                log_findings[label] = log_problems(server.log, mark)
                server.stop()

        print("baseline again (did the machine change under the run?):", flush=True)
        bench.bare(bare_port, bare.pid, home, setup="bare Starlette, again", events=False)
    finally:
        for server in servers:
            server.stop()
        stop(bare)
        if pg:
            drop_database(pg[1], pg[0])
        if temporary:
            shutil.rmtree(base, ignore_errors=True)

    rows = bench.rows
    add_ratios(rows)
    bare_rows = [r for r in rows if r["setup"] == "bare Starlette"]
    low = [r for r in bare_rows if r["req_per_s"] < SANE_BARE_REQ_S]
    if low:
        sanity = (f"NOT SANE: the bare endpoint made {min(r['req_per_s'] for r in low):,.0f} req/s (under "
                  f"{SANE_BARE_REQ_S:,}): the machine is busy or the load generator is the limit; ratios are unreliable")
    else:
        sanity = (f"sane: the bare endpoint made {min(r['req_per_s'] for r in bare_rows):,.0f} to "
                  f"{max(r['req_per_s'] for r in bare_rows):,.0f} req/s (thousands, as expected)")
    print()
    print_table(rows)
    print(f"\nbaseline check: {sanity}")
    for r in rows:
        if "events_per_s" in r:
            print(f"event batches, {r['setup']}: {r['events_per_s']:,.0f} acknowledged events/s "
                  f"({r['statuses'].get(202, 0)} batches of {EVENT_BATCH} answered 202)")
    for setup, found in bench.checks.items():
        for name, answer in found.items():
            print(f"what was measured, {setup}, {name}: {json.dumps(answer)}")
    bad = [r for r in rows if r["non_2xx"] or r["timeouts"] or sum(r["socket_errors"].values())]
    for r in bad:
        print(f"NOT ALL 2xx: {r['setup']}, {r['case']}, {r['connections']} conn.: statuses {r['statuses']}, "
              f"timeouts {r['timeouts']}, socket errors {r['socket_errors']}")
    for label, found in log_findings.items():
        if found.get("tracebacks") or found.get("non_2xx_in_access_log"):
            print(f"server log, {label}: {found}")
    if bench.memory:
        m = bench.memory
        print(f"memory, one worker, {m['requests']:,} page calls on the {args.search_items:,}-item shop: "
              f"{m['rss_mb_start']:.0f} MB at the start, {m['rss_mb_settled']:.0f} MB after a tenth, "
              f"{m['rss_mb_end']:.0f} MB at the end ({m['growth_after_settled_mb']:+.1f} MB after the first tenth)")
    notes = bench.notes + bottlenecks(rows, machine["cpus"] or 1)
    for note in notes:
        print(f"note: {note}")
    elapsed = round(time.perf_counter() - began, 1)
    setup_s = {server.label: server.setup_s for server in servers}
    print(f"\nwhole run: {elapsed:.0f} s; servers ready after (s): {setup_s}")

    machine["load_average_1m_at_end"] = round(os.getloadavg()[0], 2)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({
        "benchmark": "page_call", "when": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": machine,
        "settings": {"duration_s": args.duration, "warmup_s": args.warmup, "connections": args.connections,
                     "wrk_threads": args.threads, "wrk_timeout_s": args.timeout, "event_connections": EVENT_CONNECTIONS,
                     "event_batch": EVENT_BATCH, "history_events": HISTORY_EVENTS, "visitors": args.visitors,
                     "script_budget_ms": SCRIPT_BUDGET_MS,
                     "postgres": bool(args.postgres), "workers": args.workers, "search_items": args.search_items,
                     "memory_requests": args.memory_requests,
                     "uvicorn": "1 worker, uvloop, httptools, uvicorn access log off (Vitrine writes its own)"},
        "page_call_body": home, "history_taste": TASTE, "checks": bench.checks, "server_logs": log_findings,
        "baseline_check": sanity, "notes": notes, "elapsed_s": elapsed, "setup_s": setup_s,
        "results": rows, "memory": bench.memory,
    }, indent=2) + "\n")
    print(f"written to {args.output.relative_to(ROOT) if args.output.is_relative_to(ROOT) else args.output}")


if __name__ == "__main__":
    main()
