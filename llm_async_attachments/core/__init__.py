"""The engine: plan, prepare, read files. It never imports llm.

It takes attachment-like objects (``type``, ``path``, ``url``, ``content``)
and a ``Plan``; what it prepares goes to the store, URLs through the HTTP layer.
"""
