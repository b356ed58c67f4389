"""riskloop.delivery."""
