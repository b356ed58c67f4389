"""Test harness for tests/integration/test_cluster_shape.py: every process the test starts is a pod.

Python imports ``sitecustomize`` at start-up from ``sys.path``; the test puts this directory on
``PYTHONPATH`` for the processes it starts (kfp.local's step subprocesses, the model server, the CLI).
With ``RISKLOOP_TEST_POD_ROOT`` set, such a process starts with an empty ``RISKLOOP_STATE_DIR``, as each
pipeline step and the predictor start with an empty emptyDir on a cluster. Like the emptyDir, it is the
same path in every pod (``<root>/state``): paths recorded by one step (Feast's offline sources) look the
same to the next, but nothing one step left there survives into another. The test starts pods one at a
time, as kfp.local runs steps; a process a pod starts itself stays in that pod. Every pod is recorded in
``<root>/pods.log``.
"""

import os
import shutil

_root = os.environ.get("RISKLOOP_TEST_POD_ROOT")
if _root and not os.environ.get("RISKLOOP_TEST_POD"):
    _state = os.path.join(_root, "state")
    shutil.rmtree(_state, ignore_errors=True)
    os.makedirs(_state)
    os.environ["RISKLOOP_STATE_DIR"] = _state
    os.environ["RISKLOOP_TEST_POD"] = str(os.getpid())  # inherited by the pod's own children
    with open("/proc/self/cmdline", "rb") as _cmd, open(os.path.join(_root, "pods.log"), "a") as _log:
        _log.write(_cmd.read().replace(b"\0", b" ").decode(errors="replace").strip() + "\n")
