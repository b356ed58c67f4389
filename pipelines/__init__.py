"""KFP pipelines: wiring only. Compiled by `riskloop compile` / `make compile`."""
