"""Train the diabetes ridge regression from scikit-learn's bundled data; save it as pickle and ONNX.

    python -m scoring_templates.train_diabetes [--out models]
"""

from __future__ import annotations

import argparse
import pickle
from pathlib import Path

PICKLE_NAME = "diabetes-ridge.pkl"
ONNX_NAME = "diabetes-ridge.onnx"
N_FEATURES = 10


def train(out: Path) -> tuple[Path, Path]:
    """Fit Ridge(alpha=0.1) on the diabetes data set and write both formats into `out`."""
    import numpy as np
    from skl2onnx import to_onnx
    from sklearn.datasets import load_diabetes
    from sklearn.linear_model import Ridge

    features, target = load_diabetes(return_X_y=True)
    model = Ridge(alpha=0.1).fit(features, target)
    out.mkdir(parents=True, exist_ok=True)
    pkl = out / PICKLE_NAME
    pkl.write_bytes(pickle.dumps(model))
    onnx_model = to_onnx(model, np.zeros((1, N_FEATURES), dtype=np.float32), target_opset=17)
    onx = out / ONNX_NAME
    onx.write_bytes(onnx_model.SerializeToString())
    return pkl, onx


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").strip().splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("models"), help="folder for the model files")
    args = parser.parse_args()
    for path in train(args.out):
        print(f"wrote {path} ({path.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
