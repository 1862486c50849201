"""Dynamic state: the store (protocol, Redis and memory://), the snapshot and its watcher,
Redis keys and their types, affinity, recovery, the rollout document."""
