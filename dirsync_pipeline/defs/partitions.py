"""Each registered connection (a customer organisation) is one dynamic partition of every dirsync asset.

Dynamic, not static: organisations are added and removed while the system runs. ``connections_sensor``
(sensors.py) keeps the partitions equal to the registry, and Sync Now is materialising one partition.
"""

import dagster as dg

CONNECTIONS = dg.DynamicPartitionsDefinition(name="connections")
