"""riskloop.training."""
