"""riskloop.monitoring."""
