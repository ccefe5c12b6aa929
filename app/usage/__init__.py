"""AI usage events, tier limits and summaries."""
