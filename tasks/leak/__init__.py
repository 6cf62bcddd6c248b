"""The test-set leak check (`leak_check` stage): perceptual hashes of candidates against benchmark test sets."""
