"""The EMR link: studies and final reports handed to the hospital's EMR (FHIR R4; HL7 v2 in ``hl7``)."""
