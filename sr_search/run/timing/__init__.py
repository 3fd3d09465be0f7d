"""Timing deployed networks (DESIGN 6): `measure` and the cached `time_spec` (`measure`), the record of one
measurement (`result`), timings kept by deployed network (`cache`) and the `sr-search time` table (`table`)."""
