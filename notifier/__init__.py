"""Alert channels (see the alerting issue)."""
