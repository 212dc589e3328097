"""Everything that touches llm: the only code here that imports it.

``install`` (what the package changes in llm, and standing down when llm is not
what it expects), ``llm_internals`` (the one module that names llm's private
API), ``guard``, ``hook``, ``views``, ``history`` (finding a conversation's
attachments), ``learned_reads``, ``url_support``, ``async_attachment``,
``prepare`` (``prepare_attachments``: llm's prompts turned into the engine's
work) and ``bridge``.
"""
