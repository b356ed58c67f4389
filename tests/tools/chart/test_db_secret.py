"""The bundled PostgreSQL's credentials outlive the release as its data does."""

from __future__ import annotations

from tests.tools.chart.chart import find, render_objects


def test_db_secret_is_kept_when_the_release_is_deleted() -> None:
    """``helm uninstall`` leaves the StatefulSet's volume (its claim is not the release's); a Secret deleted with
    the release made the next install generate a new password that the kept data refused (seen on the node:
    MLflow and Feast crash-looping on "password authentication failed")."""
    objs = render_objects({})
    [statefulset] = find(objs, "StatefulSet")
    assert statefulset["spec"]["volumeClaimTemplates"], "the data lives in a claim that outlives the release"
    secrets = find(objs, "Secret", "riskloop-db")
    assert len(secrets) >= 2  # release, pipeline and model namespaces
    for secret in secrets:
        assert secret["metadata"].get("annotations", {}).get("helm.sh/resource-policy") == "keep", secret["metadata"]
