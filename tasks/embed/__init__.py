"""Embed: embedder backends, FAISS indexes and the embed stage."""
