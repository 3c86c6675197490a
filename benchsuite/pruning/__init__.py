"""Mechanics any method may use: masks and the final projection, layer-wise distributions, scores
and top-k, ramps, the batched reparametrisation, LR schedules, FLOPs.
"""
