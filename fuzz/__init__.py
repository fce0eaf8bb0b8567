"""netdicom2 fuzz harness."""
