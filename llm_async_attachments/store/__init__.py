"""Where prepared results live: each attachment's state, content in memory under one
budget with leases, URL responses shared as HTTP's caching rules allow, and the
disk tier. It never imports llm.
"""
