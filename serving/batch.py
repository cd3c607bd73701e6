"""Batch scoring with a scoring script, on Azure ML's batch contract: the driver that runs a job on this
machine (`ml-deploy batch run`) and, as the same module inside an image, a Kubernetes Job's entrypoint.

    python -m serving.batch --script score.py --input PATH --output DIR [--mini-batch-size 100]
        [--workers 2] [--error-threshold 10] [--retries 2] [--input-format tabular|json_rows|files]
        [--output-action append_row|summary_only] [--output-file-name predictions.csv]
        [--shard I/N --parts-only] [--source-root DIR]

The contract (learn.microsoft.com/azure/machine-learning/how-to-batch-scoring-script): `init()` "is
called once at the beginning of the process", `run(mini_batch)` "for each mini batch", and "The
run() method should return a pandas DataFrame or an array/list", one element per input item. A
mini-batch is a pandas DataFrame of `mini_batch_size` rows (CSV input, `tabular`) or a list of that
many file paths (a folder, `files`). With `json_rows` a script written for online serving scores a
CSV unchanged: each mini-batch becomes the request body `{"data": [[...row...], ...]}` and `run()`
is called exactly as the scoring server calls it (serving/script.py), so its answers are the online
service's answers.

What this driver adds:
- **Workers**: `--workers` processes, each loading the script and calling `init()` once.
- **Traceable output** (`append_row`): `<output>/<output_file_name>`, a CSV with each result beside
  its `source`: `<file>:<line>` for a CSV row (the header is line 1; a row whose quoted fields span
  lines counts as one), the file's path for file input; rows in input order.
- **Failures**: a mini-batch whose `run()` raises is tried `--retries` more times; then each of its
  items alone, so one bad file fails itself and not its neighbours. Failed items go to
  `<output>/errors.csv` with their source and error; the job fails once more than
  `--error-threshold` items failed (-1: never).
- **Resumable, never half-written**: each finished mini-batch is kept under `<output>/.batch-parts/`
  (written to a temporary name, then renamed); a rerun after an interrupt (SIGINT, a crash) scores
  only the mini-batches not yet kept. The output file appears only at the end, by rename.
- **Progress**: items, rate, ETA and failures, on one updated line on a terminal and as plain lines
  otherwise.
- **Shards** (a Kubernetes indexed Job's pods, `--shard I/N --parts-only`): shard I scores the
  mini-batches whose index is I modulo N into the shared parts folder and stops there; whoever
  started them assembles the output once every shard is done (`assemble`).
"""

from __future__ import annotations

import argparse
import concurrent.futures as futures
import csv
import hashlib
import io
import json
import multiprocessing
import os
import shutil
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

PARTS = ".batch-parts"
ERRORS_FILE = "errors.csv"
SUMMARY_FILE = "summary.json"
PROGRESS_EVERY_S = 5.0


class BatchError(Exception):
    """The job cannot run or failed; the message says why."""


# ---- the input ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class MiniBatch:
    index: int
    payload: Any
    """A DataFrame (tabular), rows as lists (json_rows) or file paths (files)."""
    count: int
    first_line: int = 0
    """CSV input: the line of the first row (the header is line 1)."""
    file_name: str = ""
    paths: Optional[list[str]] = None
    """File input: the files, which are their own sources."""
    labels: Optional[list[str]] = None
    """File input: how the sources are written (the paths relative to `--source-root`, when given)."""

    def source(self, i: int) -> str:
        """Item `i`'s source: `<file>:<line>` for a CSV row, the path for a file."""
        if self.paths is not None:
            return (self.labels or self.paths)[i]
        return f"{self.file_name}:{self.first_line + i}"

    def item(self, i: int) -> "MiniBatch":
        """Item `i` alone, as a mini-batch of one."""
        if self.paths is not None:
            return MiniBatch(self.index, [self.paths[i]], 1, paths=[self.paths[i]],
                             labels=[self.source(i)])
        one = self.payload.iloc[i:i + 1] if hasattr(self.payload, "iloc") else [self.payload[i]]
        return MiniBatch(self.index, one, 1, self.first_line + i, self.file_name)


def input_format(path: Path, given: Optional[str]) -> str:
    if given:
        return given
    return "files" if path.is_dir() else "tabular"


def files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and PARTS not in p.parts)


def mini_batches(path: Path, fmt: str, size: int, source_root: Optional[Path] = None) -> Iterator[MiniBatch]:
    """The input cut into mini-batches, in order."""
    if fmt == "files":
        files = files_under(path) if path.is_dir() else [path]
        for index, start in enumerate(range(0, len(files), size)):
            chunk = [str(f) for f in files[start:start + size]]
            labels = [os.path.relpath(f, source_root) for f in chunk] if source_root is not None else None
            yield MiniBatch(index, chunk, len(chunk), paths=chunk, labels=labels)
        return
    import pandas as pd

    line = 2  # the header is line 1
    for index, frame in enumerate(pd.read_csv(path, chunksize=size)):
        payload = frame if fmt == "tabular" else frame.values.tolist()
        yield MiniBatch(index, payload, len(frame), line, path.name)
        line += len(frame)


def count_items(path: Path, fmt: str) -> int:
    """How many items the input holds, for progress: files, or CSV lines after the header (a row whose
    quoted fields span lines counts more than once here, so progress may end short of 100%)."""
    if fmt == "files":
        return len(files_under(path)) if path.is_dir() else 1
    lines, last = 0, b"\n"
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            lines += chunk.count(b"\n")
            last = chunk[-1:]
    return max(0, lines + (0 if last == b"\n" else 1) - 1)


def fingerprint(args: argparse.Namespace, script: Path) -> str:
    """What the kept mini-batches were scored from: a rerun of another job must not reuse them."""
    source = Path(args.input)
    stat = source.stat()
    parts = [str(source.resolve()), str(stat.st_size), str(stat.st_mtime_ns), str(args.mini_batch_size),
             args.input_format or "", hashlib.sha256(script.read_bytes()).hexdigest()]
    if source.is_dir():
        parts += [f"{p}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in files_under(source)]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


# ---- the workers ------------------------------------------------------------------------------------

_script: Any = None
_format = "tabular"


def load_script(script: str) -> None:
    """Load the scoring script and call its init(): this process's script from now on."""
    global _script
    from serving.script import ScoringScript

    _script = ScoringScript(script)
    _script.init()


def use_format(fmt: str) -> None:
    """How this process's run() calls get their mini-batches (`input_format`)."""
    global _format
    _format = fmt


def _init_worker(script: str, fmt: str) -> None:
    # The driver stops on SIGINT; workers finish the mini-batch in hand and are then stopped by it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    load_script(script)
    use_format(fmt)


def _call(payload: Any) -> list[Any]:
    """run() on one mini-batch, as the contract says, its results as a list (one per item)."""
    if _format == "json_rows":
        args = _script.parse("POST", "application/json", b"", json.dumps({"data": payload}).encode())
        result = _script.call(args)
    else:
        result = _script.run(payload)
    if hasattr(result, "to_dict") and hasattr(result, "columns"):  # a DataFrame: one row per item
        return result.to_dict(orient="records")
    if hasattr(result, "tolist"):
        result = result.tolist()
    if isinstance(result, str):
        result = json.loads(result)
    return list(result)


Scored = tuple[int, str, list[str], int, list[tuple[str, str]]]
"""(index, the CSV rows of its results, their columns, how many, [(source, error)])."""


def results(batch: MiniBatch, retries: int) -> tuple[list[tuple[str, Any]], list[tuple[str, str]]]:
    """([(source, result)], [(source, error)]) of one mini-batch: run() on all of it, `retries` more
    times if it raises or miscounts, then on each item alone."""
    n = batch.count
    error = ""
    for _ in range(retries + 1):
        try:
            answers = _call(batch.payload)
        except Exception as err:  # noqa: BLE001 - the script's failure, reported per item
            error = f"{type(err).__name__}: {err}"
            continue
        if len(answers) != n:
            error = f"run() returned {len(answers)} results for {n} items"
            continue
        return [(batch.source(i), r) for i, r in enumerate(answers)], []
    if n == 1:
        return [], [(batch.source(0), error)]
    done: list[tuple[str, Any]] = []
    failed: list[tuple[str, str]] = []
    for i in range(n):
        ok, bad = results(batch.item(i), 0)
        done += ok
        failed += bad
    return done, failed


def score(batch: MiniBatch, retries: int) -> Scored:
    """One mini-batch scored (retried, then item by item), its results as CSV rows: formatted here,
    in the worker, so the driver only writes them out."""
    rows, errors = results(batch, retries)
    columns = list(rows[0][1]) if rows and isinstance(rows[0][1], dict) else ["result"]
    text = io.StringIO()
    writer = csv.writer(text)
    for source, result in rows:
        if isinstance(result, dict):
            writer.writerow([source, *(cell(result.get(c)) for c in columns)])
        else:
            writer.writerow([source, cell(result)])
    return batch.index, text.getvalue(), columns, len(rows), errors


# ---- the output ---------------------------------------------------------------------------------------

def cell(value: Any) -> Any:
    """A result's value as a CSV cell: scalars as they are, anything else as JSON."""
    return value if isinstance(value, (str, int, float)) or value is None else json.dumps(value)


def write_part(parts: Path, scored: Scored) -> None:
    """One finished mini-batch: its CSV rows, then its record (columns, count, errors), each written
    whole under a temporary name and renamed; a part counts as kept once its record exists."""
    index, text, columns, count, errors = scored
    for name, body in ((f"{index:08d}.csv", text),
                       (f"{index:08d}.json", json.dumps({"columns": columns, "rows": count, "errors": errors}))):
        tmp = parts / f".{name}.{os.getpid()}"
        tmp.write_text(body)
        tmp.replace(parts / name)


def kept(parts: Path) -> dict[int, int]:
    """The mini-batches already kept, with their failed-item counts."""
    found = {}
    for p in parts.glob("[0-9]*.json"):
        found[int(p.stem)] = len(json.loads(p.read_text())["errors"])
    return found


def assemble(parts: Path, output: Path, name: str, action: str, total_batches: int) -> tuple[int, int]:
    """The output file and errors.csv from the kept parts, in order: (rows, errors)."""
    rows = errors = 0
    header: Optional[list[str]] = None
    out_tmp = output / f".{name}.partial"
    err_tmp = output / f".{ERRORS_FILE}.partial"
    with out_tmp.open("w", newline="") as out, err_tmp.open("w", newline="") as err:
        err_writer = csv.writer(err)
        err_writer.writerow(["source", "error"])
        for index in range(total_batches):
            record = json.loads((parts / f"{index:08d}.json").read_text())
            if record["rows"]:
                if header is None:
                    header = list(record["columns"])
                    csv.writer(out).writerow(["source", *record["columns"]])
                elif record["columns"] != header:
                    raise BatchError(f"run() returned columns {record['columns']} for mini-batch {index}, "
                                     f"{header} before: one output file needs the same columns throughout")
                with (parts / f"{index:08d}.csv").open(newline="") as part:
                    shutil.copyfileobj(part, out)
            rows += record["rows"]
            for source, message in record["errors"]:
                err_writer.writerow([source, message])
                errors += 1
    if action == "append_row":
        out_tmp.replace(output / name)
    else:
        out_tmp.unlink()
    err_tmp.replace(output / ERRORS_FILE)
    return rows, errors


# ---- the run ------------------------------------------------------------------------------------------

class Progress:
    """Items done, rate, ETA and failures: one updated line on a terminal, plain lines otherwise."""

    def __init__(self, job: str, total: int, done: int, failed: int):
        self.job, self.total, self.done, self.failed = job, total, done, failed
        self.start, self.start_done = time.monotonic(), done
        self.tty = sys.stderr.isatty()
        self.last = 0.0

    def update(self, items: int, failed: int, final: bool = False) -> None:
        self.done += items
        self.failed += failed
        now = time.monotonic()
        if not final and now - self.last < (0.2 if self.tty else PROGRESS_EVERY_S):
            return
        self.last = now
        rate = (self.done - self.start_done) / max(now - self.start, 1e-9)
        left = (self.total - self.done) / rate if rate > 0 else 0
        share = 100 * self.done / self.total if self.total else 100
        line = (f"batch {self.job}: {self.done:,}/{self.total:,} items ({share:.0f}%), {rate:,.0f} items/s, "
                f"ETA {int(left // 60)}m{int(left % 60):02d}s, {self.failed:,} failed")
        if self.tty:
            sys.stderr.write("\r" + line + ("\n" if final else ""))
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()


def run_job(args: argparse.Namespace) -> dict[str, Any]:
    source = Path(args.input)
    if not source.exists():
        raise BatchError(f"input {source} does not exist")
    script = Path(args.script)
    fmt = input_format(source, args.input_format)
    if fmt != "files" and source.is_dir():
        raise BatchError(f"input {source} is a folder: a folder is file input (input_format files), not {fmt}")
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    parts = output / PARTS
    shard, shards = args.shard
    stamp = fingerprint(args, script)
    if parts.exists() and (parts / "job").exists() and (parts / "job").read_text() != stamp:
        # Kept from another input, script or mini-batch size: not this job's to resume.
        shutil.rmtree(parts, ignore_errors=shards > 1)
    parts.mkdir(exist_ok=True)
    _write_whole(parts / "job", stamp)  # shards write the same stamp side by side
    total = count_items(source, fmt)
    if shards > 1:
        # This shard's share of the items, for its progress.
        size = args.mini_batch_size
        total = sum(min(size, total - i * size) for i in range(shard, -(-total // size), shards))
    done_before = {i: n for i, n in kept(parts).items() if i % shards == shard}
    failed_before = sum(done_before.values())
    threshold = args.error_threshold
    items_before = sum(min(args.mini_batch_size, total - i * args.mini_batch_size) for i in done_before)
    progress = Progress(args.job, total, items_before, failed_before)
    if done_before:
        sys.stderr.write(f"batch {args.job}: resuming: {len(done_before)} mini-batches kept from an earlier run\n")
    if threshold >= 0 and failed_before > threshold:
        raise BatchError(f"{failed_before} items failed, over the job's error_threshold of {threshold} "
                         f"(kept from an earlier run in {parts}; remove it to start over)")
    failed = failed_before
    total_batches = 0
    context = multiprocessing.get_context("spawn")
    pool = futures.ProcessPoolExecutor(max_workers=args.workers, mp_context=context,
                                       initializer=_init_worker, initargs=(str(script), fmt))
    pending: set[futures.Future[Any]] = set()
    try:
        root = Path(args.source_root) if args.source_root else None
        for batch in mini_batches(source, fmt, args.mini_batch_size, root):
            total_batches = batch.index + 1
            if batch.index % shards != shard or batch.index in done_before:
                continue
            pending.add(pool.submit(score, batch, args.retries))
            if len(pending) >= args.workers * 2:
                finished, pending = futures.wait(pending, return_when=futures.FIRST_COMPLETED)
                failed = _collect(finished, parts, progress, failed, threshold)
        while pending:
            finished, pending = futures.wait(pending, return_when=futures.FIRST_COMPLETED)
            failed = _collect(finished, parts, progress, failed, threshold)
    except futures.process.BrokenProcessPool:
        raise BatchError("a worker process died (init() failed, or the process was killed); "
                         "see the output above") from None
    finally:
        # Mini-batches not started are dropped; those running finish (and are lost) before this returns.
        pool.shutdown(wait=True, cancel_futures=True)
    progress.update(0, 0, final=True)
    _write_whole(parts / "batches", str(total_batches))
    if args.parts_only:
        return {"job": args.job, "shard": f"{shard}/{shards}", "items": total, "batches": total_batches,
                "parts": str(parts)}
    rows, errors = assemble(parts, output, args.output_file_name, args.output_action, total_batches)
    summary = {"job": args.job, "items": total, "scored": rows, "failed": errors,
               "output": str(output / args.output_file_name) if args.output_action == "append_row" else None,
               "errors": str(output / ERRORS_FILE)}
    (output / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")
    shutil.rmtree(parts)
    return summary


def _write_whole(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(text)
    tmp.replace(path)


def shard_arg(value: str) -> tuple[int, int]:
    """`I/N` (0 <= I < N) as (I, N)."""
    try:
        index, count = (int(v) for v in value.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not I/N (e.g. 0/2)") from None
    if not 0 <= index < count:
        raise argparse.ArgumentTypeError(f"{value!r}: the shard I must be 0 to N-1")
    return index, count


def _collect(finished: set[futures.Future[Any]], parts: Path, progress: Progress, failed: int, threshold: int) -> int:
    for f in finished:
        scored = f.result()
        write_part(parts, scored)
        errors = scored[4]
        failed += len(errors)
        progress.update(scored[3] + len(errors), len(errors))
        if threshold >= 0 and failed > threshold:
            raise BatchError(f"{failed} items failed, over the job's error_threshold of {threshold}; "
                             f"the failures so far are in {parts} (rerun to resume)")
    return failed


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m serving.batch", description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--script", required=True)
    parser.add_argument("--input", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--job", default="batch")
    parser.add_argument("--mini-batch-size", type=int, default=100)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--error-threshold", type=int, default=-1)
    parser.add_argument("--retries", type=int, default=2)
    parser.add_argument("--input-format", choices=("tabular", "json_rows", "files"))
    parser.add_argument("--output-action", choices=("append_row", "summary_only"), default="append_row")
    parser.add_argument("--output-file-name", default="predictions.csv")
    parser.add_argument("--shard", type=shard_arg, default=(0, 1),
                        help="I/N: score only the mini-batches whose index is I modulo N (a Job's pod I of N)")
    parser.add_argument("--parts-only", action="store_true",
                        help="keep the scored mini-batches in the output's parts folder; do not assemble")
    parser.add_argument("--source-root", help="file input: write sources relative to this folder")
    args = parser.parse_args(argv)
    if args.shard[1] > 1 and not args.parts_only:
        parser.error("--shard with more than one shard needs --parts-only (the shards' starter assembles)")
    if args.mini_batch_size < 1 or args.workers < 1 or args.retries < 0:
        parser.error("--mini-batch-size and --workers must be 1 or more, --retries 0 or more")
    try:
        summary = run_job(args)
    except BatchError as err:
        print(f"batch {args.job}: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"\nbatch {args.job}: interrupted; the finished mini-batches are kept: run it again to resume",
              file=sys.stderr)
        return 130
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
