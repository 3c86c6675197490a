"""A request expanded to run configs and executed: Ray Tune or in-process; cluster checks,
progress.
"""
