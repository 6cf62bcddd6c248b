"""Retrieve: the three retrieval levels, SSIM and the retrieve stage."""
