"""`ml-deploy batch run` for a job on a Kubernetes cluster (`target: kubernetes`): stage the input on
the job's volume, run the indexed Job (components/kubernetes_batch.py), follow it, copy the scored
mini-batches back and assemble the output here, as a local run writes it.

A run is named by what it scores (the input's content, the image, the settings): run again after an
interrupt or a failed pod, it finds the input already staged and the mini-batches already kept on the
volume, and scores only the rest. A finished run's files are removed from the volume.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Optional

import yaml

from cli.errors import CliError
from components.kubernetes_batch import DATA_DIR, scoring_job, stager_pod
from serving import batch as driver

POLL_S = 3.0
STAGE_TIMEOUT_S = 300
STDIN_CHUNK = 1 << 20


def _exit_code(status_text: str, command: list[str], pod: str) -> int:
    """The exit code in an exec's closing Status (its error channel): Success is 0, a NonZeroExitCode
    names its code as the ExitCode cause; any other Status is a command that never ran."""
    status = yaml.safe_load(status_text or "{}") or {}
    if status.get("status") == "Success":
        return 0
    causes = (status.get("details") or {}).get("causes") or []
    code = next((cause.get("message") for cause in causes if cause.get("reason") == "ExitCode"), None)
    if code is None:
        raise ClusterBatchError(f"`{command[0]}` could not run in pod {pod}: {status.get('message', 'the exec ended without a status')}")
    return int(code)


class ClusterBatchError(CliError):
    """The job could not run on its cluster; the message says why."""


def input_digest(source: Path) -> str:
    """The input's content (a file, or a folder's files by relative path)."""
    digest = hashlib.sha256()
    files = driver.files_under(source) if source.is_dir() else [source]
    for path in files:
        digest.update(str(path.relative_to(source) if source.is_dir() else path.name).encode() + b"\0")
        with path.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def run_name(job: dict[str, Any], source: Path) -> str:
    """What the run scores, as a name: the same input, image and settings resume the same run."""
    what = json.dumps([job["image_ref"], job["settings"], input_digest(source)], sort_keys=True)
    return hashlib.sha256(what.encode()).hexdigest()[:16]


class Cluster:
    """The calls a run makes, against the job's namespace."""

    def __init__(self, namespace: str, kubeconfig: Optional[str], context: Optional[str]):
        from kubernetes import client, config

        api_client = config.new_client_from_config(config_file=kubeconfig, context=context)
        self.core, self.batch, self.namespace = client.CoreV1Api(api_client), client.BatchV1Api(api_client), namespace

    def exec(self, pod: str, command: list[str], stdin: Optional[Callable[[], Any]] = None,
             timeout_s: float = 600) -> tuple[int, bytes, bytes]:
        """Run `command` in the pod's container: (exit code, stdout, stderr). `stdin`, when given,
        yields the bytes to send."""
        from kubernetes.stream import stream

        ws = stream(self.core.connect_get_namespaced_pod_exec, pod, self.namespace, command=command,
                    stdin=stdin is not None, stdout=True, stderr=True, tty=False, _preload_content=False, binary=True)
        out, err = io.BytesIO(), io.BytesIO()
        try:
            if stdin is not None:
                for chunk in stdin():
                    ws.write_stdin(chunk)
                    ws.update(timeout=0)
                    while ws.peek_stdout():
                        out.write(ws.read_stdout())
                ws.close_channel(0)  # end of input, where the API server speaks v5 (the tar's end says it anyway)
            deadline = time.monotonic() + timeout_s
            while ws.is_open():
                if time.monotonic() > deadline:
                    raise ClusterBatchError(f"`{' '.join(command[:3])} ...` in pod {pod} did not finish in {timeout_s:.0f}s")
                ws.update(timeout=1)
                if ws.peek_stdout():
                    out.write(ws.read_stdout())
                if ws.peek_stderr():
                    err.write(ws.read_stderr())
            # Frames that came with the closing one are buffered still.
            if ws.peek_stdout():
                out.write(ws.read_stdout())
            if ws.peek_stderr():
                err.write(ws.read_stderr())
            return _exit_code(ws.read_channel(3), command, pod), out.getvalue(), err.getvalue()
        finally:
            ws.close()

    def exists(self, read: Callable[..., Any], name: str) -> Optional[Any]:
        from kubernetes.client.exceptions import ApiException

        try:
            return read(name, self.namespace)
        except ApiException as err:
            if err.status == 404:
                return None
            raise

    def wait_running(self, pod: str) -> None:
        from kubernetes import client

        deadline = time.monotonic() + STAGE_TIMEOUT_S
        while True:
            status = self.core.read_namespaced_pod(pod, self.namespace).status or client.V1PodStatus()
            if status.phase == "Running" and all(c.ready for c in status.container_statuses or []):
                return
            if status.phase in ("Failed", "Succeeded"):
                raise ClusterBatchError(f"the stager pod {pod} ended {status.phase}: `kubectl describe pod {pod}`")
            if time.monotonic() > deadline:
                waiting = [c.state.waiting.reason for c in status.container_statuses or [] if c.state and c.state.waiting]
                raise ClusterBatchError(f"the stager pod {pod} is not running after {STAGE_TIMEOUT_S}s "
                                        f"({', '.join(filter(None, waiting)) or status.phase})")
            time.sleep(1)


def _python(code: str) -> list[str]:
    return ["python", "-c", code]


# Untars stdin into `into` in the image's own python. The tar "data" filter where that python has one
# (3.12, and backports from 3.8.17; Debian bookworm's 3.11.2 has none): the archive is the CLI's own,
# one regular file under its own name. Whatever happens, stdin is read to its end: in the lab, an exec
# whose process exits with input unread never ends (`kubectl exec -i` too; the runtime waits on the
# stdin copy), so a failed untar would hang the run instead of reporting.
_UNTAR = """\
import os, sys, tarfile
try:
    os.makedirs({into!r}, exist_ok=True)
    with tarfile.open(fileobj=sys.stdin.buffer, mode="r|") as tar:
        tar.extractall({into!r}, **({{"filter": "data"}} if hasattr(tarfile, "data_filter") else {{}}))
    open({staged!r}, "w").close()
finally:
    while sys.stdin.buffer.read(1 << 16):
        pass
"""


def _fetch_parts(cluster: Cluster, pod: str, run_dir: str, tries: int = 3) -> bytes:
    """The run's kept mini-batches as one tar, checked: packed on the volume first, its size and
    sha256 printed, then read over exec until a copy matches both. An exec's stdout can end short of
    what the process wrote (seen in the lab under load: a tar cut inside its first member), and a
    short tar must not become a short output."""
    tar_path = f"{run_dir}/parts.tar"
    code, meta, err = cluster.exec(pod, _python(
        "import hashlib, os, tarfile\n"
        f"with tarfile.open({tar_path!r}, 'w') as t: t.add({run_dir + '/out/' + driver.PARTS!r}, arcname='.')\n"
        f"print(os.path.getsize({tar_path!r}), hashlib.sha256(open({tar_path!r}, 'rb').read()).hexdigest())"))
    if code != 0:
        raise ClusterBatchError(f"packing the scored mini-batches in pod {pod} failed: {err.decode(errors='replace')[-500:]}")
    size_text, digest = meta.decode().split()
    got = b""
    for _ in range(tries):
        code, got, err = cluster.exec(pod, _python(
            f"import shutil, sys; shutil.copyfileobj(open({tar_path!r}, 'rb'), sys.stdout.buffer); sys.stdout.flush()"))
        if code == 0 and len(got) == int(size_text) and hashlib.sha256(got).hexdigest() == digest:
            return got
    raise ClusterBatchError(f"copying the scored mini-batches from pod {pod} failed {tries} times: got {len(got)} "
                            f"of {size_text} bytes; run the same command again to resume")


def _tar_of(source: Path) -> Callable[[], Any]:
    """The input as a tar stream under its own name, in chunks."""
    def chunks() -> Any:
        with tempfile.TemporaryFile() as spool:
            with tarfile.open(fileobj=spool, mode="w") as tar:
                tar.add(str(source), arcname=source.name)
            spool.seek(0)
            while chunk := spool.read(STDIN_CHUNK):
                yield chunk
    return chunks


def run(job: dict[str, Any], name: str, source: Path, output: Path, kubeconfig: Optional[str],
        context: Optional[str], say: Callable[[str], None] = lambda line: print(line, file=sys.stderr)) -> dict[str, Any]:
    """Run the job over `source` on its cluster and write its output under `output`: the summary."""
    settings = job["settings"]
    cluster = Cluster(job["namespace"], kubeconfig, context)
    run_id = run_name(job, source)
    run_dir = f"{DATA_DIR}/{name}/{run_id}"
    fmt = driver.input_format(source, settings.get("input_format"))
    total_items = driver.count_items(source, fmt)
    size = int(settings["mini_batch_size"])
    total_batches = -(-total_items // size)
    stager = stager_pod(name, run_id, job["image_ref"], job["claim"], list(job["pull_secrets"]))
    stager_name = stager["metadata"]["name"]
    if cluster.exists(cluster.core.read_namespaced_pod, stager_name) is None:
        cluster.core.create_namespaced_pod(cluster.namespace, _pruned(stager))
    cluster.wait_running(stager_name)
    try:
        # The input, once per run.
        staged = f"{run_dir}/in/.staged"
        code, _, _ = cluster.exec(stager_name, _python(f"import os, sys; sys.exit(0 if os.path.exists({staged!r}) else 1)"))
        if code != 0:
            t0 = time.monotonic()
            code, _, err = cluster.exec(stager_name, _python(_UNTAR.format(into=run_dir + "/in", staged=staged)),
                                        stdin=_tar_of(source))
            if code != 0:
                raise ClusterBatchError(f"staging the input in pod {stager_name} failed: {err.decode(errors='replace')[-500:]}")
            say(f"batch {name}: staged {source} on the job's volume in {time.monotonic() - t0:.1f}s")
        else:
            say(f"batch {name}: resuming run {run_id}: its input is already on the job's volume")
        # The pods.
        spec = scoring_job(name, run_id, job["image_ref"], job["claim"], list(job["pull_secrets"]), settings,
                           f"{run_dir}/in/{source.name}", f"{run_dir}/in")
        job_name = spec["metadata"]["name"]
        current = cluster.exists(cluster.batch.read_namespaced_job, job_name)
        if current is not None and _failed(current):
            _delete_job(cluster, job_name)  # a failed run is started again; its kept mini-batches stay
            current = None
        if current is None:
            cluster.batch.create_namespaced_job(cluster.namespace, _pruned(spec))
        _follow(cluster, stager_name, job_name, run_dir, name, total_batches, int(settings["max_concurrency"]), say)
        # The output, here.
        local_parts = output / driver.PARTS
        output.mkdir(parents=True, exist_ok=True)
        blob = _fetch_parts(cluster, stager_name, run_dir)
        local_parts.mkdir(exist_ok=True)
        with tarfile.open(fileobj=io.BytesIO(blob), mode="r") as tar:
            tar.extractall(local_parts, filter="data")
        failed = sum(driver.kept(local_parts).values())
        threshold = int(settings["error_threshold"])
        if threshold >= 0 and failed > threshold:
            raise ClusterBatchError(f"{failed} items failed, over the job's error_threshold of {threshold}; "
                                    f"the scored mini-batches and their errors are in {local_parts}")
        rows, errors = driver.assemble(local_parts, output, settings["output_file_name"], settings["output_action"],
                                       int((local_parts / "batches").read_text()))
        summary = {"job": name, "run": run_id, "items": total_items, "scored": rows, "failed": errors,
                   "output": str(output / settings["output_file_name"]) if settings["output_action"] == "append_row" else None,
                   "errors": str(output / driver.ERRORS_FILE)}
        (output / driver.SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")
        shutil.rmtree(local_parts)
        # Done: nothing of the run stays on the cluster.
        cluster.exec(stager_name, _python(f"import shutil; shutil.rmtree({run_dir!r}, ignore_errors=True)"))
        _delete_job(cluster, job_name)
        return summary
    finally:
        cluster.core.delete_namespaced_pod(stager_name, cluster.namespace, grace_period_seconds=0)


def _pruned(value: Any) -> Any:
    """A manifest without its unset (None) fields."""
    if isinstance(value, dict):
        return {k: _pruned(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_pruned(v) for v in value]
    return value


def _failed(job: Any) -> bool:
    return any(c.type == "Failed" and c.status == "True" for c in (job.status.conditions or []))


def _delete_job(cluster: Cluster, name: str) -> None:
    from kubernetes.client.exceptions import ApiException

    try:
        cluster.batch.delete_namespaced_job(name, cluster.namespace, propagation_policy="Background")
    except ApiException as err:
        if err.status != 404:
            raise


def _follow(cluster: Cluster, stager: str, job_name: str, run_dir: str, name: str, total: int, pods: int,
            say: Callable[[str], None]) -> None:
    """Until the Job completes: a progress line (mini-batches kept, pods running) whenever it moves."""
    from kubernetes import client

    count = _python("import glob, sys; print(len(glob.glob(sys.argv[1] + '/[0-9]*.json')))")
    last = ""
    started = time.monotonic()
    while True:
        job = cluster.batch.read_namespaced_job(job_name, cluster.namespace)
        status = job.status or client.V1JobStatus()
        code, out, _ = cluster.exec(stager, [*count, f"{run_dir}/out/{driver.PARTS}"])
        kept = int(out.decode().strip() or 0) if code == 0 else 0
        line = (f"batch {name}: {kept:,}/{total:,} mini-batches, {status.active or 0} of {pods} pods running, "
                f"{status.succeeded or 0} done, {status.failed or 0} failed pods, {time.monotonic() - started:.0f}s")
        if line.split(", ")[:4] != last.split(", ")[:4]:
            say(line)
            last = line
        if _failed(job):
            reason = next((c.message for c in status.conditions or [] if c.type == "Failed"), "") or "failed"
            raise ClusterBatchError(f"job {job_name} failed: {reason} (its pods' logs: `kubectl logs -l "
                                    f"job-name={job_name} -n {cluster.namespace}`; rerun to resume from the kept "
                                    "mini-batches)")
        if (status.succeeded or 0) >= pods:
            return
        time.sleep(POLL_S)
