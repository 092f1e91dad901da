"""RIS-PACS gateway: DICOM in, de-identified objects in S3, DICOMweb and EMR out."""

__version__ = "0.1.0"
