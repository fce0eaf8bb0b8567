"""netdicom2 conformance harness: PS3.8 Table 9-10, cell by cell, against any target.

``table`` (the oracle, our own transcription of Table 9-10 and Tables 9-6 … 9-9), ``script``
(cell scripts as data), ``peer`` (the scripted peer's TCP side), ``recipes`` (one script per
cell and target kind), ``runner`` / ``local`` / ``provider`` / ``remote`` (drivers),
``matrix`` (verdicts), ``report`` (grid, JSON, JUnit, Markdown), ``cli``
(``netdicom2 conformance``). The harness itself needs only the standard library.
"""
