"""Export of the audit trail to an Audit Record Repository (IHE ITI ATNA, PS3.15 A.5)."""
