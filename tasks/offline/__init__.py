"""Offline helpers: rain synthesis and tiny random-weight models."""
