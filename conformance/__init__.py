"""netdicom2 conformance harness."""
