"""riskloop.serving."""
