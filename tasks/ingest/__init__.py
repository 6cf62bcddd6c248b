"""Ingest: sources, dataset adapters, the ingest stage."""
