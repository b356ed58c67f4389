"""riskloop.features."""
