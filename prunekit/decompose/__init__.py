"""Decomposition: low-rank factorised layers (SVD, Tucker-2, CP) and partitioning a model into stages."""
