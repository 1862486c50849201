"""Guarded changes, one implementation for every surface: operations, the switch gates, the
rollout controller, the fleet of router instances, and the watch after every switch."""
