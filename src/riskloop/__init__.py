"""riskloop: the production half of tabular risk models on Kubernetes."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("riskloop")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0"

__all__ = ["__version__"]
