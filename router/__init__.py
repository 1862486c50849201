"""token-router: blue/green switching for FCSDK Web Gateway and Live Assist systems."""

__version__ = "0.1.0"
