"""The KServe adapter: riskloop's model, router and model server on KServe's Python server.

The only serving modules that import ``kserve`` (the layer contract in pyproject.toml checks it).
The rest of ``riskloop.serving`` (request schema, metrics, prediction log, model loading, replay)
knows nothing of KServe.
"""
