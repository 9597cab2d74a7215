"""SFTP adapter: per-region connection pools to the issuers' servers (download fetches, ingest lists)."""
