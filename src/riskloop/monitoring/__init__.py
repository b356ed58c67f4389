"""riskloop.monitoring: is the champion still fit for today's traffic, and should it be retrained?

* ``frames``     — the reference sample and the prediction log in one representation
* ``drift``      — per-feature and score drift p-values, Evidently's HTML (the only Evidently importer)
* ``decay``      — late labels joined to the prediction log; daily PR-AUC and recall; significant drops
* ``assessment`` — the action (retrain / watch / ok) over a window (Benjamini-Hochberg, cooldown, one retrain
  per episode)
* ``metrics``    — the Prometheus gauges of a monitoring run, pushed to a Pushgateway
* ``stats``      — the statistics underneath (BH, fast bootstrap of PR-AUC, Wilson intervals)

A daily run: ``reference_frame`` + ``current_frame`` → ``detect_drift``;
``known_labels`` → ``join_labels`` → ``window_performance`` → ``detect_decay``;
``load_state`` → ``assess`` → ``save_state``; ``MonitoringMetrics`` →
``push_monitoring_metrics``.
"""
