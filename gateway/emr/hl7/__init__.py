"""HL7 v2 link with the EMR and RIS: an MLLP listener for ADT and orders (the modality worklist), ORU^R01 out."""
