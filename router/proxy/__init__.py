"""The proxy listener's request path: the handler, the pure routing decision, the hop to a
gateway and its lean HTTP/1.1 pool."""
