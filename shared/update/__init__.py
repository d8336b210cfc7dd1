"""Bulk update of patient and study attributes (the Azure DICOM service's ``$bulkUpdate``) and patient merge."""
