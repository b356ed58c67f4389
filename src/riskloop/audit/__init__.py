"""riskloop.audit."""
