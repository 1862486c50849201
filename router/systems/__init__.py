"""Watching the gateways: the stats answer, the prober, the reports built from both."""
