"""The host side of the vmcri agent: links, streams, exit records and the containers it runs."""
