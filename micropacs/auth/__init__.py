"""Who calls the HTTP APIs and what they may do (ARCHITECTURE.md, "Security")."""
