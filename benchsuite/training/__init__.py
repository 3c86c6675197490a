"""The one training loop, evaluation, the dense-prefix cache, one config to one recorded run,
isolated throughput.
"""
