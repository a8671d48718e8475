"""The hub's HTTP API (FastAPI on uvicorn). The hub's core never imports this package: only
`fleet-hub serve` starts it, so the dashboard and the other commands load no web stack."""
