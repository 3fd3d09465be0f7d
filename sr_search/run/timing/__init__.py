"""Timing deployed networks (docs/architecture.md, "Timing"): `measure` and the cached `time_spec` (`measure`), the
record of one measurement (`result`), timings kept by deployed network (`cache`) and the `sr-search time` table
(`table`)."""
