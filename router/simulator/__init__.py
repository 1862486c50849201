"""The simulated system behind `token-router simulate-gateway`, the demo, the tests and the bench.

It is product, not a test helper: operators run it to rehearse an upgrade without real systems.
"""

from router.simulator.gateway import GatewayOptions, create_gateway_app, run_gateway

__all__ = ["GatewayOptions", "create_gateway_app", "run_gateway"]
