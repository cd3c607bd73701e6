"""The entry point Pulumi runs (`main: infra/` in Pulumi.yaml)."""

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Pulumi puts only infra/ on sys.path; components/ and serving/ are its siblings.
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
# Relative paths (config paths, build contexts) are relative to the project root, whatever
# directory the engine or a test started the program from.
os.chdir(ROOT)

from infra.program import main  # noqa: E402

main()
