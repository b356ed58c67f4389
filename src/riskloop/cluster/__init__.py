"""The edits scripts/deploy.sh makes to the prerequisites' objects (riskloop.cluster.prerequisites).

The `riskloop cluster ...` commands live in riskloop.cli.cluster.
"""
