"""What a trial does (distil -> prune -> quantize -> export) and how it is measured."""
