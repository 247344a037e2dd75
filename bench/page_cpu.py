"""Benchmark: the server CPU one home-page call (or event batch) costs, for several checkouts measured in turn.

On a shared machine req/s move by half from one minute to the next, more than most changes
to the code do; the CPU time the server process spends per request moves much less (steal
and other users' work are not counted in it). This script starts `vitrine demo` for every
tree given (each on its own data directory under --data-dir, so the demo shop is set up once
per tree and kept), makes the same returning visitors for each (200 events of history, as
bench/page_call.py makes them), then measures in interleaved rounds: in each round every
server gets `--duration` seconds of page calls at one connection (wrk; `--connections 32`
for more), and the row is the
server's user + system CPU over that time divided by the requests made, in ms. Interleaving
spreads the machine's changes over every tree alike; the median of the rounds is the number.

    .venv/bin/python bench/page_cpu.py --tree . --tree /tmp/before [--data-dir DIR] [--rounds 5]
        [--duration 6] [--case returning new banner search] [--connections 1]

Writes bench/results/page_cpu.json (or --output). docs/benchmarks.md explains it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from urllib.parse import quote

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.loadgen import machine_info, require_wrk, run_wrk  # noqa: E402
from bench.page_call import (  # noqa: E402
    EVENT_BATCH, EVENT_CONNECTIONS, EVENT_VISITORS, SEARCH_QUERY, SHOP, TOKEN_SLOT, Server, browser_headers, home_page_body, page_body,
    post_events, read_catalog, returning_visitor,
)

RESULTS = ROOT / "bench" / "results" / "page_cpu.json"
CASES = ("returning", "new", "banner", "search", "events")


def case_request(case: str, server: Server, home: dict, tokens: list[str], items: list[str] = ()) -> dict:
    """wrk's arguments for one case against one server (`events`: batches of 10 as
    bench/page_call.py sends them, from 16 connections whatever --connections says, `items` the
    catalog's ids; a row is then per batch)."""
    port = server.port
    if case == "events":
        run_id = f"cpu{time.time_ns()}-{port}"
        senders = [post_events(port, None, [{"event_id": f"first-{run_id}-{v}", "type": "page_view"}])
                   for v in range(EVENT_VISITORS)]
        return {"url": server.url(f"/v1/events?shop={SHOP}"), "method": "POST",
                "headers": {**browser_headers(port), "Content-Type": "text/plain;charset=UTF-8", "Origin": server.url("")},
                "env": {"WRK_EVENTS": "1", "WRK_BATCH": str(EVENT_BATCH), "WRK_TOKENS": ",".join(senders),
                        "WRK_ITEMS": ",".join(items), "WRK_SHOP": SHOP, "WRK_RUN_ID": run_id}}
    if case in ("returning", "new"):
        token = TOKEN_SLOT if case == "returning" else None
        return {"url": server.url(f"/v1/page?shop={SHOP}"), "method": "POST", "body": page_body(home, token),
                "headers": browser_headers(port, post=True),
                "env": {"WRK_TOKENS": ",".join(tokens)} if case == "returning" else None}
    path = (f"/v1/fragments/banner?shop={SHOP}&placement=top" if case == "banner"
            else f"/v1/fragments/search?shop={SHOP}&q={quote(SEARCH_QUERY)}")
    return {"url": server.url(path), "headers": browser_headers(port), "env": {"WRK_TOKENS": ",".join(tokens)}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", type=Path, action="append", required=True,
                        help="a checkout to serve (repeat: `git worktree add --detach /tmp/before COMMIT`)")
    parser.add_argument("--data-dir", type=Path, default=ROOT / "var" / "bench-cpu",
                        help="one demo data directory per tree is kept here (default var/bench-cpu)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=int, default=6, help="seconds per server per case per round")
    parser.add_argument("--visitors", type=int, default=8, help="returning visitors taking turns (200 events each)")
    parser.add_argument("--case", nargs="+", choices=CASES, default=["returning", "new"])
    parser.add_argument("--connections", type=int, default=1, help="wrk's connections (default 1)")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    require_wrk()
    trees = [t.resolve() for t in args.tree]
    servers: list[Server] = []
    results: dict = {"machine": machine_info(trees[0]), "trees": {}, "rounds": args.rounds,
                     "duration_s": args.duration, "connections": args.connections, "cases": {}}
    try:
        for n, tree in enumerate(trees):
            info = machine_info(tree)
            label = f"{n}:{info['commit'][:8]}{'+' if info['uncommitted_changes'] else ''}"
            results["trees"][label] = str(tree)
            data = args.data_dir / f"tree{n}-{info['commit'][:8]}"
            logs = args.data_dir / "logs"
            logs.mkdir(parents=True, exist_ok=True)
            servers.append(Server(label, tree, data, logs / f"{label.replace(':', '-')}.log", ["demo"]).wait())
        homes, tokens, items = {}, {}, {}
        for server, tree in zip(servers, trees):
            homes[server.label] = home_page_body(server.port)
            catalog = read_catalog(tree)
            items[server.label] = [i for ids in catalog.values() for i in ids]
            tag = f"cpu{int(time.time())}-{server.port}"
            tokens[server.label] = [returning_visitor(server.port, homes[server.label], catalog, v, f"{tag}-{v}")
                                    for v in range(args.visitors)]
        time.sleep(2)  # the page-view writer and the group writer settle
        for case in args.case:
            per_server: dict[str, list[float]] = {s.label: [] for s in servers}
            for r in range(args.rounds):
                order = servers if r % 2 == 0 else servers[::-1]
                for server in order:
                    req = case_request(case, server, homes[server.label], tokens[server.label], items[server.label])
                    conns = EVENT_CONNECTIONS if case == "events" else args.connections
                    row = run_wrk(req["url"], conns, args.duration, method=req.get("method", "GET"), body=req.get("body"),
                                  headers=req["headers"], env=req.get("env"), server_pid=server.proc.pid)
                    ms = 10 * row["server_cpu_pct"] * row["duration_s"] / max(1, row["requests"])
                    bad = row["non_2xx"] + row["timeouts"]
                    per_server[server.label].append(round(ms, 3))
                    print(f"  {case:<10} round {r + 1}  {server.label:<14} {ms:6.3f} ms CPU/request  "
                          f"{row['req_per_s']:8.1f} req/s  others {row['others_cpu_pct']:5.1f}%"
                          f"{f'  {bad} failed' if bad else ''}", flush=True)
            results["cases"][case] = {label: {"rounds": v, "median_ms": statistics.median(v)}
                                      for label, v in per_server.items()}
    finally:
        for server in servers:
            server.stop()
    print(f"\n{'case':<10} " + " ".join(f"{s.label:>16}" for s in servers) + "   (median ms of server CPU per request)")
    for case, by in results["cases"].items():
        print(f"{case:<10} " + " ".join(f"{by[s.label]['median_ms']:>16.3f}" for s in servers))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(f"results: {args.output}")


if __name__ == "__main__":
    main()
