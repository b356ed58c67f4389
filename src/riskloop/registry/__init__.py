"""riskloop.registry."""
