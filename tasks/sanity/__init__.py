"""Pair sanity (`sanity` stage): model-free checks that a (rainy, clean) pair is one scene, aligned, sharp, of the same colours, and rainy."""
