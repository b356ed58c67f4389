"""``python -m riskloop.serving``'s arguments: a bad one is a clear message and exit 2, before anything loads."""

from __future__ import annotations

import pytest

from riskloop.serving.__main__ import main


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--port", "70000"], "--port: 70000 is not in 1..65535"),
        (["--port", "http"], "--port: 'http' is not an integer"),
        (["--workers", "0"], "--workers: 0 is not in 1..32"),
        (["--max-instances", "-5"], "--max-instances: -5 is not in 1..10000"),
    ],
)
def test_a_bad_argument_exits_2_naming_it(args: list[str], said: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--model-dir", "/mnt/models", *args])
    assert exc.value.code == 2
    assert said in capsys.readouterr().err
