"""Audit off the box (IHE ATNA): each audit event as a DICOM Audit Message (PS3.15 A.5), spooled durably on the
gateway and sent in order as RFC 5424 syslog over RFC 5425 TLS to the hospital's audit record repository."""
