"""The harness's tests see this machine's CPU as two logical devices, so that
`--strategy=mirrored` mirrors over two replicas as it would over two GPUs."""

import tensorflow as tf

LOGICAL_CPUS = 2

tf.config.set_logical_device_configuration(
    tf.config.list_physical_devices("CPU")[0],
    [tf.config.LogicalDeviceConfiguration()] * LOGICAL_CPUS,
)
