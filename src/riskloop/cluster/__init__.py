"""Cluster operations: publish pipelines and recurring runs to KFP."""
