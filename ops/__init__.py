"""Operations: metrics to scrape and health probes (docs/metrics.md)."""
