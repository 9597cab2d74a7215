"""Compose one-shot: create the archive bucket (FISCALFLOW_S3_BUCKET) and the S3 source bucket of
`source: s3` jobs (FISCALFLOW_S3_SOURCE_BUCKET) as the S3 admin identity.

The services' own identity may only use that bucket (the `s3-identities` config of docker-compose.yml), so the bucket
is made with the admin keys from S3_ADMIN_ACCESS_KEY / S3_ADMIN_SECRET_KEY.
"""

from __future__ import annotations

import os
import sys
import time

import botocore.session
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from shared.settings import Settings


def main() -> int:
    s = Settings()
    client = botocore.session.get_session().create_client(
        "s3", endpoint_url=s.s3_endpoint, region_name=s.s3_region,
        aws_access_key_id=os.environ["S3_ADMIN_ACCESS_KEY"],
        aws_secret_access_key=os.environ["S3_ADMIN_SECRET_KEY"],
        config=Config(s3={"addressing_style": "path"}, connect_timeout=3, read_timeout=10))
    deadline = time.monotonic() + 120
    while True:  # the gateway answers before the filer behind it takes writes
        try:
            existing = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
            for bucket in (s.s3_bucket, s.s3_source_bucket):
                if bucket not in existing:
                    client.create_bucket(Bucket=bucket)
                    print(f"created bucket {bucket}")
                else:
                    print(f"bucket {bucket} exists")
            return 0
        except (BotoCoreError, ClientError) as exc:
            if time.monotonic() > deadline:
                print(f"S3 {s.s3_endpoint}: {exc}", file=sys.stderr)
                return 1
            time.sleep(2)


if __name__ == "__main__":
    sys.exit(main())
