"""netdicom2 pcaps harness."""
