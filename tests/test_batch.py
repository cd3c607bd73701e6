"""Batch scoring with the same score.py (serving/batch.py, `ml-deploy batch run`): Azure ML's batch
contract, the online service's answers for the same rows, traceable and resumable output, per-item
failures against the error threshold, and the config with its errors."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import ROOT, TEMPLATES, assert_rejected

DRIVER = [sys.executable, "-m", "serving.batch"]


@pytest.fixture
def app(tmp_path: Path, model_files) -> Path:
    """The seed's score.py and model, laid out as in a bundle."""
    folder = tmp_path / "app"
    (folder / "models").mkdir(parents=True)
    shutil.copy(TEMPLATES / "sklearn" / "score.py", folder / "score.py")
    shutil.copy(model_files[0], folder / "models" / model_files[0].name)
    return folder


def rows_csv(path: Path, n: int) -> list[list[float]]:
    rows = [[round(((i * 7 + j * 13) % 100) / 1000 - 0.05, 4) for j in range(10)] for i in range(n)]
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([f"f{j}" for j in range(10)])
        writer.writerows(rows)
    return rows


def drive(app: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "AZUREML_MODEL_DIR": str(app / "models")}
    return subprocess.run([*DRIVER, "--script", str(app / "score.py"), *args], env=env, cwd=app,
                          capture_output=True, text=True, timeout=timeout)


def predictions(folder: Path) -> list[tuple[str, float]]:
    with (folder / "predictions.csv").open() as f:
        reader = csv.reader(f)
        assert next(reader) == ["source", "result"]
        return [(source, float(value)) for source, value in reader]


def online_answers(app: Path, rows: list[list[float]]) -> list[float]:
    """What the scoring server's run() call gives for these rows (serving/script.py, as a request)."""
    code = textwrap.dedent(f"""
        import json, sys
        from serving.script import ScoringScript
        s = ScoringScript({str(app / "score.py")!r}); s.init()
        rows = json.load(sys.stdin)
        print(json.dumps(s.call(s.parse("POST", "application/json", b"", json.dumps({{"data": rows}}).encode()))))
    """)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "AZUREML_MODEL_DIR": str(app / "models")}
    done = subprocess.run([sys.executable, "-c", code], input=json.dumps(rows), env=env, cwd=app,
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def test_the_online_script_scores_a_csv_with_the_online_answers(app, tmp_path):
    rows = rows_csv(tmp_path / "rows.csv", 2_000)
    done = drive(app, "--input", str(tmp_path / "rows.csv"), "--output", str(tmp_path / "out"),
                 "--input-format", "json_rows", "--mini-batch-size", "300", "--workers", "2")
    assert done.returncode == 0, done.stderr
    got = predictions(tmp_path / "out")
    assert [s for s, _ in got] == [f"rows.csv:{i + 2}" for i in range(2_000)]  # each traceable to its line
    assert [v for _, v in got] == pytest.approx(online_answers(app, rows), rel=1e-12)
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["scored"] == 2_000 and summary["failed"] == 0
    assert not (tmp_path / "out" / ".batch-parts").exists()


TABULAR = '''
import os, joblib, pathlib
model = None
def init():
    global model
    model = joblib.load(next(pathlib.Path(os.environ["AZUREML_MODEL_DIR"]).glob("*.pkl")))
def run(mini_batch):
    # Azure ML's batch contract: a DataFrame in, a DataFrame out, one row per input row.
    import pandas as pd
    return pd.DataFrame({"prediction": model.predict(mini_batch.values), "rows_in_batch": len(mini_batch)})
'''


def test_a_batch_script_gets_dataframes_and_returns_one_row_each(app, tmp_path):
    (app / "score.py").write_text(TABULAR)
    rows_csv(tmp_path / "rows.csv", 250)
    done = drive(app, "--input", str(tmp_path / "rows.csv"), "--output", str(tmp_path / "out"), "--mini-batch-size", "100")
    assert done.returncode == 0, done.stderr
    with (tmp_path / "out" / "predictions.csv").open() as f:
        table = list(csv.DictReader(f))
    assert len(table) == 250 and list(table[0]) == ["source", "prediction", "rows_in_batch"]
    assert [t["rows_in_batch"] for t in table[::100]] == ["100", "100", "50"]


SLOW = '''
import time
def init():
    pass
def run(mini_batch):
    time.sleep(0.05)
    return [float(r[0]) for r in mini_batch.values.tolist()]
'''


def test_an_interrupted_run_resumes_and_writes_each_row_once(app, tmp_path):
    (app / "score.py").write_text(SLOW)
    rows_csv(tmp_path / "rows.csv", 3_000)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "AZUREML_MODEL_DIR": str(app / "models")}
    args = [*DRIVER, "--script", str(app / "score.py"), "--input", str(tmp_path / "rows.csv"),
            "--output", str(tmp_path / "out"), "--mini-batch-size", "50", "--workers", "2"]
    proc = subprocess.Popen(args, env=env, cwd=app, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    parts = tmp_path / "out" / ".batch-parts"
    deadline = time.monotonic() + 120
    while len(list(parts.glob("[0-9]*.json"))) < 20:
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "run it again to resume" in err, err
    assert not (tmp_path / "out" / "predictions.csv").exists()  # nothing half-written
    kept = len(list(parts.glob("[0-9]*.json")))
    done = drive(app, "--input", str(tmp_path / "rows.csv"), "--output", str(tmp_path / "out"),
                 "--mini-batch-size", "50", "--workers", "2")
    assert done.returncode == 0, done.stderr
    assert f"resuming: {kept} mini-batches kept" in done.stderr
    sources = [s for s, _ in predictions(tmp_path / "out")]
    assert sources == [f"rows.csv:{i + 2}" for i in range(3_000)]  # every row exactly once, in order
    print(f"\ninterrupted after {kept} of 60 mini-batches; the rerun scored the other {60 - kept}")


FILES = '''
import json
def init():
    pass
def run(mini_batch):
    # One result per file; a corrupt file raises, which fails its whole mini-batch.
    return [json.loads(open(path).read())["value"] * 2 for path in mini_batch]
'''


def _files(folder: Path, n: int, corrupt_every: int) -> list[str]:
    folder.mkdir()
    bad = []
    for i in range(n):
        path = folder / f"item-{i:05d}.json"
        if i % corrupt_every == corrupt_every - 1:
            path.write_text("{not json")
            bad.append(str(path))
        else:
            path.write_text(json.dumps({"value": i}))
    return bad


def test_corrupt_files_fail_alone_and_the_threshold_decides_the_job(app, tmp_path):
    (app / "score.py").write_text(FILES)
    bad = _files(tmp_path / "in", 1_000, 100)  # 1% corrupt: 10 files
    ok = drive(app, "--input", str(tmp_path / "in"), "--output", str(tmp_path / "ok"), "--mini-batch-size", "20",
               "--workers", "2", "--error-threshold", "20", "--retries", "1")
    assert ok.returncode == 0, ok.stderr
    with (tmp_path / "ok" / "errors.csv").open() as f:
        errors = list(csv.DictReader(f))
    assert sorted(e["source"] for e in errors) == sorted(bad)
    assert all("JSONDecodeError" in e["error"] for e in errors)
    scored = predictions(tmp_path / "ok")
    assert len(scored) == 990 and scored[0] == (str(tmp_path / "in" / "item-00000.json"), 0.0)

    failed = drive(app, "--input", str(tmp_path / "in"), "--output", str(tmp_path / "bad"), "--mini-batch-size", "20",
                   "--workers", "2", "--error-threshold", "5", "--retries", "0")
    assert failed.returncode == 1
    assert "over the job's error_threshold of 5" in failed.stderr


def test_a_failing_init_fails_the_job_in_one_line(app, tmp_path):
    (app / "score.py").write_text("def init():\n    raise RuntimeError('no model')\ndef run(b):\n    return b\n")
    rows_csv(tmp_path / "rows.csv", 10)
    done = drive(app, "--input", str(tmp_path / "rows.csv"), "--output", str(tmp_path / "out"))
    assert done.returncode == 1 and "a worker process died" in done.stderr


# ---- the config ------------------------------------------------------------------------------------

def batch_config(config: dict[str, Any], **job: Any) -> dict[str, Any]:
    config["ml-deploy:workspace"] = {"name": "local", "kind": "local", "path": ".ml-deploy/test-local", "protect": False}
    config["ml-deploy:services"] = []
    config["ml-deploy:batch"] = [{"name": "nightly", "image": "diabetes", "mini_batch_size": 500,
                                  "max_concurrency": 2, "error_threshold": 10, **job}]
    return config


def test_a_local_job_exports_what_batch_run_needs(config):
    from tests.helpers import run_config

    rec = run_config(batch_config(config, input_format="json_rows"))
    job = rec.outputs["batch"]["nightly"]
    assert job["target"] == "local" and job["image"] == "diabetes" and job["python"].endswith("/bin/python")
    assert job["settings"]["mini_batch_size"] == 500 and job["settings"]["input_format"] == "json_rows"
    from cli.batch import command

    argv, env, cwd = command(job, "nightly", Path("rows.csv"), Path("out"))
    assert argv[1:3] == ["-m", "serving.batch"] and "--workers" in argv and argv[argv.index("--workers") + 1] == "2"
    assert env["AZUREML_MODEL_DIR"].startswith(str(cwd))


def test_a_job_names_an_image_of_the_stack(config):
    assert_rejected(batch_config(config, image="nope"), "batch[0].image", "no image named 'nope'")


def test_batch_targets_are_named_and_fit_the_workspace(config):
    assert_rejected(batch_config(config, target="spark"), "batch[0].target", "unknown batch target")
    assert_rejected(batch_config(config, target="batch_endpoint"), "batch[0].target", "needs a workspace of kind azure")


def test_a_local_job_scales_with_max_concurrency(config):
    assert_rejected(batch_config(config, instance_count=3), "batch[0].instance_count", "max_concurrency")


# ---- through the real engine: the local stack with a job beside its service --------------------------

def test_a_job_of_the_local_stack_gives_its_service_answers(tmp_path_factory, model_files):
    import httpx
    import yaml

    from cli.batch import command
    from tests.helpers import copy_project, local_engine_stack

    project = copy_project(tmp_path_factory.mktemp("project"), model_files[0])
    stack_file = project / "Pulumi.local.yaml"
    data = yaml.safe_load(stack_file.read_text())
    data["config"]["ml-deploy:batch"] = [{"name": "nightly", "image": "diabetes", "mini_batch_size": 200,
                                          "max_concurrency": 2, "input_format": "json_rows"}]
    stack_file.write_text(yaml.safe_dump(data))
    source = tmp_path_factory.mktemp("in") / "rows.csv"
    rows = rows_csv(source, 1_000)
    with local_engine_stack(project, tmp_path_factory.mktemp("state")) as stack:
        assert stack.up(on_output=lambda _: None).summary.result == "succeeded"
        outputs = stack.outputs()
        job = outputs["batch"].value["nightly"]
        argv, env, cwd = command(job, "nightly", source, tmp_path_factory.mktemp("out"))
        done = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        batch = [v for _, v in predictions(Path(argv[argv.index("--output") + 1]))]
        service = outputs["services"].value["diabetes-local"]
        online = httpx.post(service["scoring_uri"], json={"data": rows},
                            headers={"authorization": f"Bearer {service['primary_key']}"}, timeout=60).json()
    assert batch == pytest.approx(online, rel=1e-12) and len(batch) == 1_000
