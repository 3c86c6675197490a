"""A request expanded to run configs and executed: Ray Tune, in-process, cluster checks, progress.
"""
