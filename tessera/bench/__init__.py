"""``tessera bench``: load generation against an endpoint, reporting what ``vllm bench serve`` reports."""
