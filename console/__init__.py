"""The retention console: read-only pages over the scores and campaigns the platform keeps."""
