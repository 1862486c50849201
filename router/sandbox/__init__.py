"""The whole product on one machine: the zero-setup demo (and the local stack it runs on)."""
