"""Long-running operations (bulk update, patient merge): their records, status and study locks."""
