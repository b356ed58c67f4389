"""riskloop.data."""
