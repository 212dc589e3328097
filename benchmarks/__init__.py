import os

# The plugins the benchmarks measure with. The test extra also installs plugins for
# tests/integration/test_url_support.py, and llm-openai-plugin's registration makes every
# llm.get_async_model() call take ~100 ms (and more each time): a cost of that
# plugin, paid by llm alone too, that would swamp what is measured here. Benchmarks
# that compare plugin sets (B1, B6, B7, B8, overhead) set their own.
os.environ.setdefault(
    "LLM_LOAD_PLUGINS", "llm-echo,llm-markov,llm-all-models-async,llm-async-attachments"
)
