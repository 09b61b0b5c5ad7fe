"""The batched send path (issue 14): accept now (``accept.py``), materialize after
(``materialize.py``)."""
