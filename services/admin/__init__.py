"""The admin service: the REST API (and web UI) to browse, send and delete studies, manage
nodes, the worklist, users and tokens, and see the archive's status and audit trail."""
