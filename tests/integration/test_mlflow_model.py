"""The registered version is an MLflow model: ``mlflow.pyfunc.load_model("models:/<model>@champion")``, in a fresh
environment built only from the model's own requirements (no riskloop installed), scores raw rows exactly as
riskloop's own scoring does (the bundle on the same frame, the predictor's V1 answer); the signature is the
spec's raw columns in their contract types; the directory the server reads (model.ubj and its sha256, model.json,
the spec) is where it was.

The model is trained and registered by the training pipeline's own steps (train, register) on a credit-like
table built here: text categories with missing values, a nullable integer, no time axis.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from riskloop.model import LABEL, SPLIT, ModelBundle
from riskloop.settings import Settings
from riskloop.steps.training import Registration, TrainedModel

MODEL = "loan-scorer"
REPO_ROOT = Path(__file__).resolve().parents[2]
SPEC = f"""\
name: loans
model_name: {MODEL}
source: {{kind: parquet, path: landing/loans}}
id_column: loan_id
timestamp_column: null
label: {{column: status, positive: [bad]}}
features:
  source: raw
  raw_columns: [checking, purpose, duration, amount, age]
  categorical: [checking, purpose]
split: {{kind: stratified}}
contract:
  columns:
    loan_id: {{type: string, unique: true}}
    checking: {{type: category, allowed: ["none", "low", "high"], nullable: true}}
    purpose: {{type: category, allowed: ["car", "home", "education"]}}
    duration: {{type: integer, min: 0}}
    amount: {{type: float, min: 0, nullable: true}}
    age: {{type: integer, min: 18, nullable: true}}
    status: {{type: category, allowed: ["good", "bad"]}}
"""
EXPECTED_INPUTS = [
    {"name": "checking", "type": "string"},
    {"name": "purpose", "type": "string"},
    {"name": "duration", "type": "long"},
    {"name": "amount", "type": "double"},
    {"name": "age", "type": "double"},  # a nullable integer: MLflow cannot pass a missing value as a long
]
# loads the registered version the way any MLflow user would, where riskloop is not installed
FRESH_SCRIPT = f"""
import importlib.util, sys
import mlflow, numpy as np, pandas as pd
assert importlib.util.find_spec("riskloop") is None, "riskloop is installed in the fresh environment"
uri, rows, out = sys.argv[1:]
mlflow.set_tracking_uri(uri)
model = mlflow.pyfunc.load_model("models:/{MODEL}@champion")
np.save(out, np.asarray(model.predict(pd.read_pickle(rows)), dtype=np.float64))
"""


def loans(n: int = 900, seed: int = 7) -> pd.DataFrame:
    """A credit-like table: the label depends on every feature; missing values in three columns."""
    rng = np.random.default_rng(seed)
    checking = rng.choice(np.array(["none", "low", "high"], dtype=object), n)
    checking[rng.random(n) < 0.1] = None
    purpose = rng.choice(np.array(["car", "home", "education"], dtype=object), n)
    duration = rng.integers(6, 61, n)
    amount = rng.lognormal(8, 0.7, n)
    amount[rng.random(n) < 0.08] = np.nan
    age = rng.integers(18, 76, n).astype(np.float64)
    age[rng.random(n) < 0.05] = np.nan
    logit = (
        -1.0
        + 1.2 * (checking == "low")
        - 0.8 * (checking == "high")
        + 0.5 * (purpose == "car")
        + 0.03 * (duration - 30)
        + 0.4 * np.nan_to_num(np.log(amount) - 8)
        - 0.02 * np.nan_to_num(age - 45)
    )
    bad = rng.random(n) < 1 / (1 + np.exp(-logit.astype(np.float64)))
    return pd.DataFrame(
        {
            "loan_id": [f"L{i:05d}" for i in range(n)],
            "checking": checking,
            "purpose": purpose,
            "duration": duration,
            "amount": amount,
            "age": age,
            LABEL: bad.astype(np.int64),
            SPLIT: rng.choice(["train", "validation", "test"], n, p=[0.6, 0.2, 0.2]),
        }
    )


@dataclass(frozen=True)
class Registered:
    settings: Settings
    spec: Path
    work: Path
    frame: pd.DataFrame
    trained: TrainedModel
    registration: Registration


@pytest.fixture(scope="module")
def registered(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registered]:
    from riskloop import steps
    from riskloop.training.gate import GateResult

    root = tmp_path_factory.mktemp("mlflow-model")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RISKLOOP_STATE_DIR", str(root))
        mp.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
        mp.chdir(root)
        s, w = Settings(), root / "work"
        w.mkdir()
        spec = root / "loans.yaml"
        spec.write_text(SPEC)
        frame = loans()
        frame.to_parquet(w / "ts.parquet", index=False)
        trained = steps.train(
            str(spec),
            w / "ts.parquet",
            {"n_estimators": 60, "max_depth": 3, "nthread": 1},
            w / "model",
            s,
            pipeline_run_id="pyfunc-run",
            data_sha256="d" * 64,
            data_snapshot=str(w / "ts.parquet"),
            cutoff_date="2026-01-31",
            maturity_days=0.0,
        )
        passed = GateResult(True, ("pass: built for this test",), {}, None, None)
        registration = steps.register(
            trained.mlflow_run_id,
            w / "model",
            passed,
            str(spec),
            s,
            pipeline_run_id="pyfunc-run",
            data_sha256="d" * 64,
            data_snapshot=str(w / "ts.parquet"),
        )
        assert "champion" in registration.aliases
        yield Registered(s, spec, w, frame, trained, registration)


def raw_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """Test rows as a user sends them: the id column, no label or split, one category never seen in training."""
    rows = frame[frame[SPLIT] == "test"].drop(columns=[LABEL, SPLIT]).reset_index(drop=True)
    rows.loc[0, "purpose"] = "boat"
    return rows


def test_the_version_is_an_mlflow_model_with_the_contract_signature_and_the_server_layout(
    registered: Registered, tmp_path: Path
) -> None:
    import mlflow

    from riskloop.hashing import sha256_file
    from riskloop.model import MODEL_FILE, load_model
    from riskloop.registry.mlflow_registry import SPEC_FILE, download_model_dir, resolve_version

    s = registered.settings
    mlflow.set_tracking_uri(s.tracking_uri)
    info = mlflow.models.get_model_info(f"models:/{MODEL}@champion")
    assert info.signature.inputs.to_dict() == [{**c, "required": True} for c in EXPECTED_INPUTS]
    assert info.signature.outputs.to_dict() == [{"type": "tensor", "tensor-spec": {"dtype": "float64", "shape": (-1,)}}]
    assert info.flavors["python_function"]["loader_module"] == "riskloop.model.pyfunc"

    version = resolve_version(s.tracking_uri, MODEL, alias="champion")
    d = download_model_dir(s.tracking_uri, version.run_id, tmp_path / "dl")
    names = {p.name for p in d.iterdir()}
    assert {MODEL_FILE, "model.json", SPEC_FILE, "MLmodel", "requirements.txt", "python_env.yaml", "code"} <= names
    assert "uv.lock" not in names  # the model's environment is its requirements, not the platform's lock
    assert sha256_file(d / MODEL_FILE) == version.tags["model_sha256"] == registered.trained.model_sha256
    assert load_model(d, expected_sha256=version.tags["model_sha256"]).features.names == tuple(
        c["name"] for c in EXPECTED_INPUTS
    )
    # every shipped module sits under code/riskloop, and only the scoring part of riskloop
    shipped = {p.relative_to(d / "code").as_posix() for p in (d / "code").rglob("*.py")}
    assert {"riskloop/model/pyfunc.py", "riskloop/model/features.py", "riskloop/errors.py"} <= shipped
    assert not any(p.startswith(("riskloop/cli", "riskloop/serving", "riskloop/data")) for p in shipped)

    locked = {p["name"]: p["version"] for p in tomllib.loads((REPO_ROOT / "uv.lock").read_text())["package"]}
    requirements = (d / "requirements.txt").read_text().split()
    assert sorted(requirements) == sorted(f"{n}=={locked[n]}" for n in ("mlflow", "numpy", "pandas", "xgboost"))


def test_pyfunc_in_a_fresh_environment_scores_raw_rows_as_riskloop_does(registered: Registered, tmp_path: Path) -> None:
    """The model's requirements alone (uv, from its cache when it can) give an environment that loads the
    champion from the registry and scores raw rows bit for bit as the bundle and the server do on the same rows."""
    from riskloop.model import load_model
    from riskloop.registry.mlflow_registry import download_model_dir, resolve_version

    s = registered.settings
    version = resolve_version(s.tracking_uri, MODEL, alias="champion")
    model_dir = download_model_dir(s.tracking_uri, version.run_id, tmp_path / "dl")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    venv = tmp_path / "venv"
    subprocess.run(["uv", "venv", "--quiet", "--python", sys.executable, str(venv)], check=True, env=env)
    install = ["uv", "pip", "install", "--quiet", "--python", str(venv / "bin" / "python")]
    install += ["-r", str(model_dir / "requirements.txt")]
    if subprocess.run([*install, "--offline"], env=env, capture_output=True).returncode != 0:
        subprocess.run(install, check=True, env=env)  # something the cache lacks: from the index

    rows = raw_rows(registered.frame)
    rows.to_pickle(tmp_path / "rows.pkl")
    out = tmp_path / "scores.npy"
    r = subprocess.run(
        [str(venv / "bin" / "python"), "-c", FRESH_SCRIPT, s.tracking_uri, str(tmp_path / "rows.pkl"), str(out)],
        cwd=tmp_path,
        env={**env, "MLFLOW_DISABLE_TELEMETRY": "true"},
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr[-3000:]

    pyfunc_scores = np.load(out)
    bundle = load_model(model_dir, expected_sha256=version.tags["model_sha256"])
    assert pyfunc_scores.shape == (len(rows),) and np.isfinite(pyfunc_scores).all()
    np.testing.assert_array_equal(pyfunc_scores, bundle.predict_frame(rows))
    # the unseen category scored as a missing one, as the server does
    assert bundle.predict_frame(rows.iloc[[0]].assign(purpose=None))[0] == pyfunc_scores[0]
    np.testing.assert_array_equal(pyfunc_scores, served_v1(registered, bundle, version.version, rows))


def served_v1(registered: Registered, bundle: ModelBundle, version: str, rows: pd.DataFrame) -> np.ndarray:
    """The scores of riskloop's predictor (in process, no feature store: a raw-column spec needs none) for the
    same rows sent as a V1 request: JSON values, missing as null, integers as integers."""
    from riskloop.data.spec import load_spec
    from riskloop.serving.predictor import NoFeatures, Runtime, scoring_model

    spec = load_spec(registered.spec)
    predictor = scoring_model(spec)(
        MODEL, bundle=bundle, model_version=version, spec=spec, runtime=lambda: Runtime(NoFeatures())
    )
    predictor.load()
    integers = {"duration", "age"}
    instances = [
        {k: None if pd.isna(v) else int(v) if k in integers else v for k, v in row.items()}
        for row in rows.to_dict(orient="records")
    ]
    scored = predictor.predict(instances, request_id="in-process")
    predictions = [predictor.v1_item(s, "in-process", 0) for s in scored]
    assert [p["loan_id"] for p in predictions] == rows["loan_id"].tolist()
    return np.array([p["score"] for p in predictions], dtype=np.float64)
