"""The admin listener: health and readiness probes, the JSON API (and the operator page).

Served only on `router.admin_listen`, never on the proxy port: the proxy is reachable by
web applications, the admin listener only by operators. The app is put together by the one
wiring point (router/server/wiring.py); the modules here are its handlers and their helpers.
"""
