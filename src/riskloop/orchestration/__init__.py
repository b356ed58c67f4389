"""The KFP adapter's runners: the pipelines under kfp.local (``local``), compiled to IR YAML
(``compile``), uploaded with their recurring runs to a KFP API (``publish``, ``schedules``).

With ``riskloop.components`` and ``riskloop.pipelines`` this is the only place that imports ``kfp``
(the layer contract in pyproject.toml checks it).
"""
