"""The FHIR R4 side of the EMR link: client, patient matching, resource mapping, delivery."""
