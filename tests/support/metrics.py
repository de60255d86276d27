"""Reading a /metrics exposition through prometheus_client's own parser (which rejects bad
text), then summing samples by name and labels."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample


def samples(text: str) -> list[Sample]:
    """Every sample of an exposition."""
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def total(scraped: list[Sample], name: str, /, **where: str) -> float:
    """The sum of the samples called `name` whose labels include `where`."""
    return sum(s.value for s in scraped
               if s.name == name and all(s.labels.get(k) == v for k, v in where.items()))


def labels(scraped: list[Sample], name: str) -> list[dict[str, str]]:
    """The label sets of the samples called `name`."""
    return [s.labels for s in scraped if s.name == name]
