"""Put this folder on PYTHONPATH to run a process as on a machine without the 'finetune' extra: importing any
package named in SLUICEGATE_NOT_INSTALLED fails as a missing package does (tests/test_packaging.py)."""

import importlib.abc
import os
import sys

NOT_INSTALLED = set(filter(None, os.environ.get("SLUICEGATE_NOT_INSTALLED", "").split(",")))


class NotInstalled(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in NOT_INSTALLED:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, NotInstalled())
