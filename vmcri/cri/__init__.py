"""The gRPC edge: CRI servicers (decode, call a service, encode) and the server."""
