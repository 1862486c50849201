"""One router process: running it, the one wiring point, listen addresses, the allocator
settings, the event-loop probe."""
