"""Batch scoring throughput: the seed's score.py over a large CSV with serving/batch.py, beside a plain
loop calling the same run() in one process (the ceiling).

A CSV of `--rows` rows (ten features, as the diabetes model takes) is made once. The driver scores it
with `input_format: json_rows` (the online script unchanged) at 1 and 2 workers; the ceiling reads
the same CSV in chunks of the same size with pandas and calls run() exactly as the driver does, in
one process, writing nothing. Prints rows/s, the driver's wall time and the largest peak RSS of any
of its processes.

    .venv/bin/python -m benchmarks.batch_bench [--rows 1000000] [--mini-batch-size 1000]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.serving_bench import ROOT, load_average

CEILING = """
import json, sys, time
import pandas as pd
from serving.script import ScoringScript
script = ScoringScript(sys.argv[1]); script.init()
start = time.perf_counter(); n = 0
for frame in pd.read_csv(sys.argv[2], chunksize=int(sys.argv[3])):
    rows = frame.values.tolist()
    out = script.call(script.parse("POST", "application/json", b"", json.dumps({"data": rows}).encode()))
    assert len(out) == len(rows)
    n += len(rows)
print(json.dumps({"rows": n, "seconds": time.perf_counter() - start}))
"""


def make_csv(path: Path, rows: int) -> None:
    import numpy as np

    rng = np.random.default_rng(0)
    with path.open("w") as f:
        f.write(",".join(f"f{j}" for j in range(10)) + "\n")
        for start in range(0, rows, 100_000):
            block = rng.normal(0, 0.05, size=(min(100_000, rows - start), 10)).round(5)
            f.write("\n".join(",".join(map(str, r)) for r in block.tolist()) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--mini-batch-size", type=int, default=1000)
    args = parser.parse_args()
    model = ROOT / "models" / "diabetes-ridge.pkl"
    if not model.exists():
        raise SystemExit("no models/diabetes-ridge.pkl: run `bash scripts/setup` first")
    with tempfile.TemporaryDirectory(prefix="ml-deploy-batch-bench-") as tmp:
        folder = Path(tmp)
        app = folder / "app"
        (app / "models").mkdir(parents=True)
        shutil.copy(ROOT / "scoring_templates" / "sklearn" / "score.py", app / "score.py")
        shutil.copy(model, app / "models" / model.name)
        data = folder / "rows.csv"
        make_csv(data, args.rows)
        env = {**os.environ, "PYTHONPATH": str(ROOT), "AZUREML_MODEL_DIR": str(app / "models")}
        results = []
        for workers in (1, 2):
            out = folder / f"out-{workers}"
            start = time.perf_counter()
            done = subprocess.run([sys.executable, "-m", "serving.batch", "--script", str(app / "score.py"),
                                   "--input", str(data), "--output", str(out), "--input-format", "json_rows",
                                   "--mini-batch-size", str(args.mini_batch_size), "--workers", str(workers)],
                                  env=env, cwd=app, capture_output=True, text=True)
            seconds = time.perf_counter() - start
            if done.returncode != 0:
                raise SystemExit(done.stderr)
            summary = json.loads(done.stdout)
            lines = sum(1 for _ in (out / "predictions.csv").open()) - 1
            assert summary["scored"] == args.rows == lines, (summary, lines)
            results.append((f"serving/batch.py, {workers} worker{'s' if workers > 1 else ''}", args.rows / seconds, seconds))
        done = subprocess.run([sys.executable, "-c", CEILING, str(app / "score.py"), str(data), str(args.mini_batch_size)],
                              env=env, cwd=app, capture_output=True, text=True, check=True)
        ceiling = json.loads(done.stdout)
        results.append(("ceiling: run() in a pandas loop, 1 process", ceiling["rows"] / ceiling["seconds"], ceiling["seconds"]))
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"Batch scoring, {args.rows:,} rows, mini-batches of {args.mini_batch_size}, "
          f"machine load before: {load_average()}\n")
    print("| how | rows/s | seconds |")
    print("|---|---:|---:|")
    for name, rate, seconds in results:
        print(f"| {name} | {rate:,.0f} | {seconds:.1f} |")
    print(f"\nLargest peak RSS of any one process (driver, a worker, the ceiling): {peak_mb:,.0f} MB")


if __name__ == "__main__":
    main()
