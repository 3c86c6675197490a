"""One quiet 2-CPU local Ray instance, as the orchestration tests start it."""

import logging

from benchsuite.execution.cluster import quiet_ray_environment


def start_local_ray():
    import ray

    quiet_ray_environment()
    ray.init(
        address="local",
        num_cpus=2,
        num_gpus=0,
        include_dashboard=False,
        log_to_driver=False,
        logging_level=logging.ERROR,
    )
    return ray
