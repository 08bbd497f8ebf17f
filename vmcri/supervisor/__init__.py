"""The host side of the vmcri agent: links, streams, exit records and the containers it runs;
``api.py`` is what the runtime calls and what the supervisor reports up (an exit, once)."""
