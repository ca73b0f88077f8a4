"""DICOMweb (PS3.18) pieces shared by the services: multipart bodies, QIDO-RS parameters."""
