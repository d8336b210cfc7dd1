"""Event types and payloads, the publisher, and the subscription filter model."""
