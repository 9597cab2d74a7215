"""CFDI 4.0 building blocks shared by the validator and the demo issuers."""
