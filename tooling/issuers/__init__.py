"""Demo issuers: a run-time PKI and a generator of sealed, stamped CFDI 4.0 invoices.

``pki`` makes the certificates, ``draft`` picks what an invoice says, ``amounts`` does the SAT
arithmetic, ``xmltree`` writes the XML, ``sealing`` seals and stamps it, ``defects`` breaks a
fraction on purpose, ``generator`` ties them together and ``output`` writes region folders.
"""
