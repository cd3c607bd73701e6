"""The ml-deploy policy pack: every rule of `policy/rules.py` as a pulumi-policy resource validation.

Started by the Pulumi CLI (`pulumi preview --policy-pack "$PWD/policy/run"`), never imported by
tests: constructing the PolicyPack starts the analyzer's gRPC server.
"""

import os
import sys
from pathlib import Path

from pulumi_policy import EnforcementLevel, PolicyPack, ResourceValidationPolicy

PACK = Path(__file__).resolve().parent
# rules.py imports infra/vm_sizes.py, serving/settings.py and content/edge_manifest.py from the
# project beside the pack.
sys.path.insert(0, str(PACK.parent))

from policy.rules import promoted_stacks_from_files, rules, stack_root  # noqa: E402

# The folder of the stack files: the project folder above where the CLI started the pack (`run`
# passes it on), which is the program's folder, infra/, not the project's.
STACK_ROOT = stack_root(os.environ, Path.cwd())

PolicyPack(
    name="ml-deploy",
    enforcement_level=EnforcementLevel.MANDATORY,
    policies=[
        ResourceValidationPolicy(
            name=rule.id,
            description=rule.description,
            enforcement_level=EnforcementLevel.MANDATORY if rule.mandatory else EnforcementLevel.ADVISORY,
            validate=rule.validate,
        )
        for rule in rules(promoted_stacks_from_files(STACK_ROOT))
    ],
)
