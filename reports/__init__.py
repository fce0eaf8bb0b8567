"""Self-contained HTML reports of the conformance matrix, pcap replays and fuzzing campaigns."""
