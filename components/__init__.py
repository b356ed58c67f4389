"""KFP v2 components: one thin wrapper per pipeline step, named like the library function it calls.

Every component is a lightweight Python component on the project image
(``install_kfp_package=False``, imports inside the body), so the same function
runs under kfp.local and in the cluster.
"""

from riskloop.version import runtime_image

RUNTIME_IMAGE = runtime_image()
