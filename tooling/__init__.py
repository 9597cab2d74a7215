"""Tooling, not product: the local stack on real servers (``stack``), demo issuers and their PKI
(``issuers``), the demo (``demo``), the bench harness (``bench``) and the benchmark log
(``bench_results``).  Its own distribution (``tooling/pyproject.toml``); never in the image.
The product (shared/, services/) imports none of it; ``fiscalflow`` adds its command groups when
it is installed."""
