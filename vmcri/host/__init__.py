"""Host side effects shared by the backends (mounts), each behind a Protocol."""
