"""`ml-deploy batch run`: score a CSV or a folder of files with a batch job's image.

    ./ml-deploy batch run --stack local --job nightly-churn --input rows.csv --output out/
    ./ml-deploy batch run --stack lab --job nightly-k8s --input rows.csv --output out/ [--kubeconfig F] [--context C]

The job is an entry of the stack's `ml-deploy:batch`; `pulumi up` has prepared its image (the bundle
and the environment's venv, as for a local service) and exported where they are (`batch.<job>`).
This runs serving/batch.py from that bundle with that venv and the job's settings: `max_concurrency`
workers, progress on stderr, `<output>/predictions.csv` (append_row), `errors.csv`, `summary.json`.
Interrupted (Ctrl-C), it keeps the finished mini-batches: the same command resumes.

A job with `target: kubernetes` or `aks` runs as an indexed Job on its cluster (cli/batch_kubernetes.py),
with the same output here; for AKS the kubeconfig is yours (`az aks get-credentials`). A job with
`target: batch_endpoint` runs as an Azure ML job of its endpoint (cli/batch_endpoint.py), its output
downloaded here.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from cli import errors
from cli.engine import stack_outputs
from cli.errors import CliError
from content.bundle import APP_DIR, SCRIPT_NAME


class BatchCliError(CliError):
    """The job cannot be started; the message says why."""


def command(job: dict[str, Any], name: str, source: Path, output: Path) -> tuple[list[str], dict[str, str], Path]:
    """The driver's command line, environment and folder for a job's `batch.<name>` output."""
    settings = job["settings"]
    bundle = Path(job["bundle"])
    app = bundle / APP_DIR
    argv = [job["python"], "-m", "serving.batch", "--job", name, "--script", str(app / SCRIPT_NAME),
            "--input", str(source.resolve()), "--output", str(output.resolve()),
            "--mini-batch-size", str(settings["mini_batch_size"]), "--workers", str(settings["max_concurrency"]),
            "--error-threshold", str(settings["error_threshold"]), "--retries", str(settings["retries"]),
            "--output-action", settings["output_action"], "--output-file-name", settings["output_file_name"]]
    if settings.get("input_format"):
        argv += ["--input-format", settings["input_format"]]
    env = {**os.environ, "PYTHONPATH": str(bundle), "AZUREML_MODEL_DIR": str(app / job["model_dir"])}
    # The environment's venv runs it, not the project's.
    env.pop("VIRTUAL_ENV", None)
    return argv, env, app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ml-deploy batch", description=(__doc__ or "").strip().splitlines()[0])
    sub = parser.add_subparsers(dest="action", required=True)
    run = sub.add_parser("run", help="run a batch job of a stack on this machine")
    run.add_argument("--stack", required=True)
    run.add_argument("--job", required=True, help="the job's name in ml-deploy:batch")
    run.add_argument("--input", required=True, help="a CSV file, or a folder of files")
    run.add_argument("--output", required=True, help="the folder for predictions.csv, errors.csv, summary.json")
    run.add_argument("--kubeconfig", help="a job on a cluster: the kubeconfig (default: $KUBECONFIG or ~/.kube/config)")
    run.add_argument("--context", help="a job on a cluster: the kubeconfig context")
    errors.add_debug_flag(run)
    args = parser.parse_args(argv)
    with errors.one_line("ml-deploy batch", args.debug):
        jobs = stack_outputs(args.stack, "batch") or {}
        if not isinstance(jobs, dict) or args.job not in jobs:
            known = ", ".join(jobs) if isinstance(jobs, dict) and jobs else "none"
            raise BatchCliError(f"stack {args.stack!r} has no batch job {args.job!r} deployed (it has: {known}); "
                                f"declare it under ml-deploy:batch and `pulumi up --stack {args.stack}`")
        job = jobs[args.job]
        source = Path(args.input)
        if not source.exists():
            raise BatchCliError(f"input {source} does not exist")
        if job.get("target") in ("kubernetes", "aks"):
            from cli import batch_kubernetes

            try:
                summary = batch_kubernetes.run(job, args.job, source, Path(args.output), args.kubeconfig, args.context)
            except KeyboardInterrupt:
                print(f"\nbatch {args.job}: interrupted; the kept mini-batches stay on the job's volume: "
                      "run it again to resume", file=sys.stderr)
                return 130
            print(json.dumps(summary))
            return 0
        if job.get("target") == "batch_endpoint":
            from cli import batch_endpoint

            try:
                print(json.dumps(batch_endpoint.run(job, args.job, source, Path(args.output))))
            except KeyboardInterrupt:
                return 130
            return 0
        if job.get("target") != "local":
            raise BatchCliError(f"batch job {args.job!r} runs on {job.get('target')!r}, which `batch run` does not start yet")
        argv_, env, cwd = command(job, args.job, source, Path(args.output))
        if not Path(argv_[0]).exists():
            raise BatchCliError(f"the job's environment {argv_[0]} is gone: `pulumi up --stack {args.stack}` again")
    try:
        return subprocess.run(argv_, env=env, cwd=cwd).returncode
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
