"""The domain vocabulary every service shares: records, statuses, reason codes, messages."""
