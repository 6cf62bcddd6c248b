"""Pair sanity (`sanity` stage): model-free checks that a (rainy, clean) pair shows one scene, aligned,
sharp, of the same colours, and with rain in it."""
