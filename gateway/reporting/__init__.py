"""Radiology reporting: the report templates offered to radiologists."""
