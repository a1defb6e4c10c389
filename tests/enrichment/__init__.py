"""Tests of the enrichment agent against the real PostgreSQL and Kafka."""
