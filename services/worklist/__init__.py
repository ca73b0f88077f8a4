"""The worklist service: Modality Worklist, MPPS and HL7 v2 orders and patients from the RIS."""
