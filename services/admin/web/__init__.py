"""The admin web UI: server-rendered pages over the same functions as the REST API."""
