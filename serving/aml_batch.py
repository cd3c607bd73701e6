"""The scoring script of an Azure ML batch deployment (`target: batch_endpoint`): it runs the image's
own score.py, so the script that serves online and scores batches here scores on Azure ML too.

Azure ML's batch driver imports this module from the deployment's code asset (a one-line file that
imports `init` and `run` from here) and calls `init()` once per process and `run(mini_batch)` for each
mini-batch, where "The method receives a list of file paths" and returns "a Pandas DataFrame or an
array/list", "Everything that the run() function returns is appended in the output predictions file"
(learn.microsoft.com/azure/machine-learning/how-to-batch-scoring-script). This module gives the
image's score.py what the local and Kubernetes drivers give it (serving/batch.py):

- file input (`files`): its run() gets the files, `mini_batch_size` at a time, as Azure passes them;
- a CSV file (`tabular`, or `json_rows` for an online script): its rows, `ML_DEPLOY_ROWS_PER_CALL`
  at a time, as a DataFrame or as the online request body `{"data": rows}`;
- each result row starts with its source (`<file>:<line>` for a CSV row, the file name otherwise), so
  the output traces back to its input; a mini-batch that raises is tried item by item (Azure retries
  the whole mini-batch itself), a failed item is left out of the results, which Azure counts against
  `error_threshold` for file input, and logged with its source and error on stderr.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from serving import batch as driver

INPUT_FORMAT_ENV = "ML_DEPLOY_INPUT_FORMAT"
"""`tabular`, `json_rows` or `files`; unset: a `.csv` file is tabular, any other file is a file item."""
ROWS_PER_CALL_ENV = "ML_DEPLOY_ROWS_PER_CALL"
"""CSV rows per run() call (the job's `mini_batch_size`)."""
SCRIPT_ENV = "AZUREML_ENTRY_SCRIPT"
"""The image's score.py, as its Dockerfile sets it (content/bundle.py)."""


def init() -> None:
    """Load the image's score.py and call its init(), once per process."""
    script = os.environ.get(SCRIPT_ENV)
    if not script or not Path(script).is_file():
        raise RuntimeError(f"{SCRIPT_ENV} names no scoring script ({script!r}): is this an ml-deploy image?")
    driver.load_script(script)


def _format(path: Path) -> str:
    given = os.environ.get(INPUT_FORMAT_ENV) or None
    if given:
        return given
    return "tabular" if path.suffix.lower() == ".csv" else "files"


def run(mini_batch: list[str]) -> Any:
    """Score Azure ML's mini-batch (file paths): one result row per scored item, its source first."""
    import pandas as pd

    paths = [Path(p) for p in mini_batch]
    formats = {_format(p) for p in paths}
    results: list[dict[str, Any]] = []
    for fmt in sorted(formats):
        driver.use_format(fmt)
        chosen = [p for p in paths if _format(p) == fmt]
        if fmt == "files":
            names = [str(p) for p in chosen]
            batches = [driver.MiniBatch(0, names, len(names), paths=names, labels=[p.name for p in chosen])]
        else:
            rows = int(os.environ.get(ROWS_PER_CALL_ENV) or "1000")
            batches = [b for p in chosen for b in driver.mini_batches(p, fmt, rows)]
        for batch in batches:
            done, failed = driver.results(batch, retries=0)
            for source, result in done:
                row = result if isinstance(result, dict) else {"result": result}
                results.append({"source": source, **{k: driver.cell(v) for k, v in row.items()}})
            for source, error in failed:
                print(f"ml-deploy batch: {source}: {error}", file=sys.stderr, flush=True)
    return pd.DataFrame(results)
