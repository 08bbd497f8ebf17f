"""HTTP/1.1 on a plain socket for vmcri's own servers (streaming, metrics): request heads read
within bounds, and connections admitted by address before any byte is parsed."""
